"""Calibration of the estimator: fit its parameters to published and measured latencies (`fit.py`), the op
records of the programs those latencies refer to (`reference_programs.py`), and re-estimating the shipped
latency tables after a fit (`retable.py`).

It sits above the latency table (it prices a component the way `snapbench profile` does) and above the
estimator it tunes (`snapbench.profilers.estimate`), which knows nothing of it.
"""
