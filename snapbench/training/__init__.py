"""Training infrastructure that robust training (`evolution/`) and distillation (`distillation/`) share:
trained model folders (`checkpoints.py`), training data (`data.py`), the toy-digits task (`toy_digits.py`),
DDIM sampling (`sampling.py`) and the optimizer loop with its resume rules and progress bar (`loop.py`).

It sits below both: nothing here imports `snapbench.evolution` or `snapbench.distillation`.
"""
