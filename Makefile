# Two commands do everything (see README):
#   make run    set up, then execute every notebook headless at PROFILE (default quick)
#   make test   set up, then unit tests + nbval over the notebooks + papermill smoke runs
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= quick
TORCH := torch==2.13.0

.PHONY: setup run test unit bench lab clean

setup: $(VENV)/.installed

# torch goes first and pinned: the CPU wheel on CPU-only machines, never an unpinned
# resolve that would pull a multi-GB CUDA build. Then the kit, editable.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -c "import torch, kit; print('torch', torch.__version__, '| kit', kit.__version__)"
	touch $@

run: setup
	$(BIN)/kit run-all --profile $(PROFILE)

test: setup
	KIT_HEADLESS=1 $(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest -p no:nbval -o addopts="" --doctest-modules tests kit

bench: setup
	$(BIN)/python benchmarks/run_all.py

lab: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
