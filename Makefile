# `make demo` and `make test` each set everything up from nothing.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/torchlangevin demo --out demo_out

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/core.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
