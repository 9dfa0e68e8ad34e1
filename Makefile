# xbarlab: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints.txt
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: venv install install-test sysdeps data demo test lint typecheck pytest bench bench-peers clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[test]'
	touch $@

venv install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Debian packages: ngspice (circuit validation tests) and the full Fashion-MNIST data set.
# Installed when missing and when apt-get is usable (root); otherwise a message says what is missing.
sysdeps:
	@bash scripts/sysdeps.sh

data:
	@bash scripts/sysdeps.sh dataset-fashion-mnist

demo: $(VENV)/.installed
	-@bash scripts/sysdeps.sh dataset-fashion-mnist
	$(VENV)/bin/xbarlab demo --out reports/demo

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(VENV)/.installed-test
	$(VENV)/bin/mypy

pytest: $(VENV)/.installed-test sysdeps
	$(PY) -m pytest -q

test: lint typecheck pytest

bench: $(VENV)/.installed
	$(VENV)/bin/xbarlab bench

# xbarlab vs IBM aihwkit 1.2.0 in one process (builds .venv-aihwkit from source when missing; not part of `make test`).
bench-peers:
	nice -n 10 bash scripts/build_aihwkit.sh
	.venv-aihwkit/bin/python benchmarks/bench_vs_aihwkit.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
