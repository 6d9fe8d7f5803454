"""`python -m snapbench.train ...` = `snapbench train ...`, so that `accelerate launch -m snapbench.train`
starts multi-GPU robust training."""

import sys

from snapbench.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
