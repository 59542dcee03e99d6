# Two commands do everything (see README):
#   make run    set up, then execute every notebook headless at PROFILE (default quick)
#   make test   set up, then unit tests + nbval over the notebooks + papermill smoke runs,
#               then the unit tests again with precision "auto" meaning the other precision
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

# The unit tests run twice: as the machine decides precision "auto", then with "auto" meaning the
# other precision (KIT_AMP_AUTO), so no test can pass only because of the CPU it happens to run on
# (bf16 where the CPU runs it natively, fp32 elsewhere).
OTHER_AMP = $(BIN)/python -c "from kit.machine import auto_is_bf16; print('fp32' if auto_is_bf16() else 'bf16')"

test: setup
	KIT_HEADLESS=1 $(BIN)/python -m pytest
	KIT_HEADLESS=1 KIT_AMP_AUTO=$$($(OTHER_AMP)) $(BIN)/python -m pytest -p no:nbval -o addopts="-ra --doctest-modules" -m "not slow" -q tests kit

unit: setup
	$(BIN)/python -m pytest -p no:nbval -o addopts="" --doctest-modules tests kit

bench: setup
	$(BIN)/python benchmarks/run_all.py

lab: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
