# One-command entry points. A fresh clone needs nothing else: every target runs `setup` first.
#   make train compile bench   -> runs/$(NAME), artifacts/$(NAME), bench report
#   make test                  -> the full test suite (what CI runs)
#   make fuzz                  -> 10,000 fuzz cases vs ONNX Runtime (~15 min) -> reports/fuzz/report.json
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
NAME   ?= default
CONFIG ?= configs/default.yaml
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup dataset train compile bench frontier ablation test fuzz lint clean

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
	$(PY) -m train --config $(CONFIG) --name $(NAME)

compile: setup
	$(PY) -m compile runs/$(NAME) --out artifacts/$(NAME)

bench: setup
	$(PY) -m benchmarks.bench artifacts/$(NAME)

frontier: setup
	$(PY) -m benchmarks.frontier

ablation: setup
	$(PY) -m benchmarks.ablation

test: setup
	$(PY) -m pytest -q

fuzz: setup
	$(PY) -m tests.fuzz.harness --cases 10000 --out reports/fuzz

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf runs artifacts reports build *.egg-info
