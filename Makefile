# `make demo` and `make test` each set everything up from nothing.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bench-llc bench-llc-lm bench-tabular bench-gradients \
	bench-ess bench-venv-blackjax bench-venv-numpyro bench-venv-sdv bench-venv-torchebm clean

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
	$(PY) -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples

# Peers live in their own environments so they never touch .venv.
.bench/torchebm/.installed:
	$(PYTHON) -m venv .bench/torchebm
	.bench/torchebm/bin/pip install --quiet "$(TORCH)"
	.bench/torchebm/bin/pip install --quiet torchebm==0.8.9 numpy
	touch $@

bench-venv-torchebm: .bench/torchebm/.installed

# pip resolved jax/jaxlib 0.10.2 for blackjax 1.7.1 (2026-12-01); scikit-learn for the
# breast_cancer target of bench-gradients
.bench/blackjax/.installed:
	$(PYTHON) -m venv .bench/blackjax
	.bench/blackjax/bin/pip install --quiet --upgrade pip
	.bench/blackjax/bin/pip install --quiet blackjax==1.7.1 "jax[cpu]==0.10.2" jaxlib==0.10.2 numpy scikit-learn
	touch $@

bench-venv-blackjax: .bench/blackjax/.installed

.bench/devinterp/.installed:
	$(PYTHON) -m venv .bench/devinterp
	.bench/devinterp/bin/pip install --quiet "$(TORCH)"
	.bench/devinterp/bin/pip install --quiet devinterp==2.0.1
	touch $@

bench-llc: $(STAMP) .bench/devinterp/.installed
	$(PY) benchmarks/llc.py

# a small GPT-2-style LM at 3 checkpoints, devinterp 2.0.1 in its venv against ours
bench-llc-lm: $(STAMP) .bench/devinterp/.installed
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[lm]"
	OMP_NUM_THREADS=1 $(PY) benchmarks/llc_lm.py

.bench/tabpfgen/.installed:
	$(PYTHON) -m venv .bench/tabpfgen
	.bench/tabpfgen/bin/pip install --quiet "$(TORCH)"
	.bench/tabpfgen/bin/pip install --quiet tabpfgen==0.1.4 scikit-learn pandas
	touch $@

# pip resolved sdv 2.0.0 (ctgan 0.12.1, rdt 2.0.0) on 2026-12-01
.bench/sdv/.installed:
	$(PYTHON) -m venv .bench/sdv
	.bench/sdv/bin/pip install --quiet "$(TORCH)"
	.bench/sdv/bin/pip install --quiet "$(TORCH)" sdv==2.0.0
	touch $@

bench-venv-sdv: .bench/sdv/.installed

bench-tabular: $(STAMP) .bench/tabpfgen/.installed .bench/sdv/.installed
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[bench]"
	$(PY) benchmarks/tabular.py

bench-gradients: $(STAMP) .bench/blackjax/.installed
	mkdir -p bench_out
	$(PY) benchmarks/gradients.py --out bench_out/gradients.json

# pip resolved numpyro 0.22.0 with jax/jaxlib 0.10.2 (2026-12-01)
.bench/numpyro/.installed:
	$(PYTHON) -m venv .bench/numpyro
	.bench/numpyro/bin/pip install --quiet --upgrade pip
	.bench/numpyro/bin/pip install --quiet numpyro==0.22.0 jax==0.10.2 jaxlib==0.10.2 numpy
	touch $@

bench-venv-numpyro: .bench/numpyro/.installed

# ESS per second against NumPyro's vectorized NUTS and Pyro's NUTS (pyro from the [all] extra)
bench-ess: $(STAMP) .bench/numpyro/.installed
	mkdir -p bench_out
	$(PY) benchmarks/ess_per_second.py --out bench_out/ess_per_second.json

bench: $(STAMP) .bench/torchebm/.installed .bench/blackjax/.installed
	$(PY) benchmarks/core.py
	$(PY) benchmarks/peers.py

clean:
	rm -rf $(VENV) .bench demo_out .pytest_cache
