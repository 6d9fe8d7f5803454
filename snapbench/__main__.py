from snapbench.cli import run

run()
