# Two commands on a fresh machine: `make demo` and `make test`. Each creates its
# own environment under .venv (Python 3.11 by default; PYTHON=python3.x to change).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# How many tox environments run at once (tox's --parallel: a number or auto).
PARALLEL ?= auto

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: $(BIN)/python pyproject.toml tools/pyproject.toml
	$(BIN)/python -m pip install --quiet -e . -e ./tools
	touch $@

$(VENV)/.tox-installed: $(BIN)/python
	$(BIN)/python -m pip install --quiet 'tox>=4.11'
	touch $@

## demo: an embedded broker and an instrumented pipeline, drawn as one trace
demo: $(VENV)/.demo-installed
	$(BIN)/kafkaplus demo $(DEMO_ARGS)

## test: the tox matrix with the Pythons this machine has (pyenv's too); lists what it skipped
test: $(VENV)/.tox-installed
	KAFKAPLUS_PARALLEL=$(PARALLEL) $(BIN)/python tools/tox_matrix.py

## bench: the benchmark (uninstrumented vs the official plugin vs kafkaplus)
bench:
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .tox build dist
