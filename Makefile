# The two commands a newcomer needs:  make run   and   make test
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install run test lint docs report clean

# Installs the package and its tools; leaves the user's Flower home (~/.flwr) alone.
$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "fedkd needs Python >= 3.11 (flwr 1.42 does); try: make install PY=python3.11"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# A default federated run: its own Flower home and free ports, nothing left running after it.
run: $(STAMP)
	$(BIN)/fedkd run

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --durations=15

lint: $(STAMP)
	$(BIN)/ruff check fedkd clients server experiments deploy tests
	$(BIN)/ruff format --check fedkd clients server experiments deploy tests
	$(BIN)/mypy fedkd clients server experiments deploy

# The docs site (docs/index.md; the API reference is generated from the docstrings into
# docs/generated/). Warnings are errors, as in CI.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

# The README's and docs/results/summary.md's results table, from the results.json files.
report: $(STAMP)
	$(BIN)/python -m experiments.report

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis docs/_build docs/generated
