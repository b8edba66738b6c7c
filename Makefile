# One-command entry points. A fresh clone needs nothing else: every target runs `setup` first.
#   make train compile bench   -> runs/$(NAME), artifacts/$(NAME), bench report
#   make test                  -> the full test suite, then test-wheel (what CI runs)
#   make test-wheel            -> build the wheel, install it alone in a fresh venv (no torch) and
#                                 run the engine and the `featherdeploy` command from it (~6 min)
#   make test-aarch64          -> build the native engine for aarch64, run the `aarch64` tests
#                                 under qemu emulation (tools/aarch64/test.sh; needs root once)
#   make fuzz                  -> 10,000 fuzz cases vs ONNX Runtime (~15 min) -> reports/fuzz/report.json
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
FD     := $(VENV)/bin/featherdeploy
NAME   ?= default
CONFIG ?= configs/default.yaml
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup dataset train compile bench frontier ablation fullsize test test-wheel test-aarch64 \
	fuzz lint clean

setup: $(STAMP) dataset

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel pybind11
	$(PY) -m pip install -q -e '.[train,reports,dev]'
	touch $(STAMP)

# The offline default dataset comes from Debian; install it when missing and we are root.
dataset:
	@if [ ! -d $(FMNIST) ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "note: $(FMNIST) missing; run 'sudo apt-get install dataset-fashion-mnist' or pass --data-dir"; \
	  fi; \
	fi

train: setup
	$(FD) train --config $(CONFIG) --name $(NAME)

compile: setup
	$(FD) compile runs/$(NAME) --out artifacts/$(NAME)

bench: setup
	$(PY) -m benchmarks.bench artifacts/$(NAME)

frontier: setup
	$(PY) -m benchmarks.frontier

ablation: setup
	$(PY) -m benchmarks.ablation

# The full-size peer suite (issue 21; peers' venvs: docs/peers.md). Hours: run on a quiet machine.
# RESUME=--resume continues an interrupted run of the same commit.
fullsize: setup
	$(PY) -m benchmarks.fullsize --json benchmarks/results/fullsize.json \
	    --markdown benchmarks/results/fullsize.md $(RESUME)

test: setup
	$(PY) -m pytest -q
	$(MAKE) test-wheel

# The installed layout (featherdeploy.* only, core dependencies only) is not what the tests above
# import from the checkout: check it from a wheel (tools/wheel_check.sh).
test-wheel: setup
	PY=$(PY) bash tools/wheel_check.sh

test-aarch64: setup
	PY=$(PY) bash tools/aarch64/test.sh

fuzz: setup
	$(PY) -m tests.fuzz.harness --cases 10000 --out reports/fuzz

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf runs artifacts reports build *.egg-info
