# Two commands do everything on a fresh machine with Python >= 3.10 and pip:
#   make study   # create .venv if missing, install, run the default study (snakemake --cores all)
#   make test    # create .venv if missing, install, run the test suite (what CI runs)
# Installs use requirements.lock (the exact versions CI tested); `make env-latest` installs the newest
# versions pyproject.toml's ranges allow instead, `make lock` regenerates the lock from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mtl3d-installed
LOCK   := requirements.lock

.PHONY: study test test-all gpu-check lint env env-latest lock clean-env

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r $(LOCK)
	$(BIN)/python -m pip install --no-deps -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true
	@touch $(STAMP)

env: $(STAMP)

env-latest:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install --upgrade -e ".[dev]"
	@touch $(STAMP)

lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install pip-tools
	$(BIN)/pip-compile --strip-extras --extra dev --no-emit-find-links --no-emit-index-url --unsafe-package mtl3d \
		--output-file $(LOCK) pyproject.toml

study: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores all

# --durations: CI's log names the slowest tests, so the suite can be kept under its 20-minute budget
test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -m "not slow and not gpu" -q --durations=15

test-all: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

# On a GPU machine (~8 min): gpu tests, every model family at its recipe's resolution +-regularizer,
# fp32/bf16/compile, loader and eval images/s, resume, a short SynthRooms run; writes
# results/gpu_check/gpu_check.{json,md}; exit 1 if any row failed. CI runs --dry and --rehearse on CPU.
gpu-check: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/gpu_check.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean-env:
	rm -rf $(VENV)
