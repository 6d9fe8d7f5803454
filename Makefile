# Two commands on a fresh machine: `make demo` and `make test`. Both create or refresh .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# This machine kind has a CPU build of torch 2.13.0 on local disk; an unpinned torch would pull a
# multi-GB CUDA build. The library itself only asks for a range (pyproject.toml).
TORCH_SPEC ?= torch==2.13.0
# the torchvision release built for that torch (timm and open_clip need one; an unpinned one pulls a new torch)
TORCHVISION_SPEC ?= torchvision==0.28.0
STAMP  := $(VENV)/.snapbench-installed
# pytest processes for `make test` / `make test-fast` (pytest-xdist): one per core by default, at most 8 (each
# holds torch); WORKERS=0 runs the suite in this one process. loadgroup keeps the tests of one shared conversion
# or module fixture on one worker (tests/conftest.py), so it is made once; --no-loadscope-reorder hands the work
# out in the order conftest sorts it (longest first), so no long test starts last.
WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -q -n $(WORKERS) --maxprocesses 8 --dist loadgroup --no-loadscope-reorder

.PHONY: setup browser demo test test-fast lint bench clean mutate-device

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" "$(TORCHVISION_SPEC)" "numpy<=2.3.5"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

# Headless Chromium for the report's browser tests (Debian's package; needs root or sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not installed and no root: browser tests will be skipped"; fi; }

# The main job on embedded defaults: the stage tables of both models, then the default report
# (SD-v1.5 vs SnapFusion on iphone14pro, estimated from the shipped latency tables; anything the
# tables lack is converted and estimated with progress bars). It ends with the headline numbers, the
# report's path (the line `report: ...`) and the path of the data behind it (`data: ...`).
demo: setup
	$(BIN)/snapbench inspect --model sd15 --no-blocks
	$(BIN)/snapbench inspect --model snapfusion --no-blocks
	$(BIN)/snapbench report --json | sed "s/^\(.*\.html\)$$/report: \1/; s/^\(.*\.json\)$$/data: \1/"

test: setup browser
	$(BIN)/ruff check snapbench tests benchmarks
	$(BIN)/mypy
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

# ruff (pyflakes + bugbear) and mypy (basic checking of snapbench/; settings in pyproject.toml)
lint: setup
	$(BIN)/ruff check snapbench tests benchmarks
	$(BIN)/mypy

# The device adapter's tests against small mistakes in the adapter, one mutated copy at a time (minutes;
# not part of `make test`): exits 1 if any mutation survives.
mutate-device: setup
	$(BIN)/python tests/mutate_device.py

bench: setup
	$(BIN)/python benchmarks/bench_convert.py
	$(BIN)/python benchmarks/bench_profile.py
	$(BIN)/python benchmarks/bench_lookup.py
	$(BIN)/python benchmarks/bench_cli_runs.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .snapbench-cache
