# `make demo` and `make test` each set everything up from nothing.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bench-llc bench-tabular clean

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
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples

# Peers live in their own environments so they never touch .venv.
.bench/torchebm/.installed:
	$(PYTHON) -m venv .bench/torchebm
	.bench/torchebm/bin/pip install --quiet "$(TORCH)"
	.bench/torchebm/bin/pip install --quiet torchebm==0.8.9 numpy
	touch $@

.bench/blackjax/.installed:
	$(PYTHON) -m venv .bench/blackjax
	.bench/blackjax/bin/pip install --quiet jax jaxlib blackjax==1.7.1 numpy
	touch $@

.bench/devinterp/.installed:
	$(PYTHON) -m venv .bench/devinterp
	.bench/devinterp/bin/pip install --quiet "$(TORCH)"
	.bench/devinterp/bin/pip install --quiet devinterp==2.0.1
	touch $@

bench-llc: $(STAMP) .bench/devinterp/.installed
	$(PY) benchmarks/llc.py

.bench/tabpfgen/.installed:
	$(PYTHON) -m venv .bench/tabpfgen
	.bench/tabpfgen/bin/pip install --quiet "$(TORCH)"
	.bench/tabpfgen/bin/pip install --quiet tabpfgen==0.1.4 scikit-learn pandas
	touch $@

bench-tabular: $(STAMP) .bench/tabpfgen/.installed
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/tabular.py

bench: $(STAMP) .bench/torchebm/.installed .bench/blackjax/.installed
	$(PY) benchmarks/core.py
	$(PY) benchmarks/peers.py

clean:
	rm -rf $(VENV) .bench demo_out .pytest_cache
