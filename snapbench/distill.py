"""`python -m snapbench.distill ...` = `snapbench distill ...`, so that `accelerate launch -m snapbench.distill`
starts multi-GPU step distillation."""

import sys

from snapbench.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
