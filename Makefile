# alarm-bridge: `make run` to try it, `make test` to check it. `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# The first Python >= 3.11 on PATH (override: make PYTHON=/path/to/python3.12 ...).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "make: alarm-bridge needs Python 3.11 or newer on PATH" >&2; exit 1; }
	@# A venv that failed half-way (no ensurepip: Debian without python3-venv) leaves bin/python
	@# behind; remove it, or every later make would take it as made and fail on a missing pip.
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "make: could not create $(VENV) (on Debian or Ubuntu: apt install python3-venv)" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip || { rm -rf $(VENV); exit 1; }

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

.PHONY: help run sandbox test soak bench bench-growth lint fmt docs migrate clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

run: $(VENV)/.installed ## install and run the whole service with embedded defaults (http://127.0.0.1:8000)
	$(BIN)/alarm-bridge dev

sandbox: $(VENV)/.installed ## run only the vendor simulators (http://127.0.0.1:8100)
	$(BIN)/alarm-bridge sandbox

test: $(VENV)/.installed-test ## install, make sure Redis and PostgreSQL answer, run the whole suite (with its coverage floor)
	$(BIN)/python .ci/services.py
	$(BIN)/python -m pytest --cov --cov-report= $(PYTEST_ARGS)

soak: $(VENV)/.installed-test ## 10,000 alarms through 20 kills, 2 Redis restarts and a slow, stormy vendor (up to 15 min)
	$(BIN)/python .ci/services.py
	$(BIN)/python -m pytest -m soak -s tests/reliability/test_soak.py $(PYTEST_ARGS)

bench: $(VENV)/.installed-test ## benchmark ingest, signal to first request and the storm (BENCH_ARGS=--quick)
	$(BIN)/python .ci/services.py
	$(BIN)/python .ci/bench.py $(BENCH_ARGS)

bench-growth: $(VENV)/.installed-test ## a year of alarms against an empty ledger: intake, lists, metrics, retention
	$(BIN)/python .ci/services.py
	$(BIN)/python .ci/bench_growth.py $(BENCH_ARGS)

lint: $(VENV)/.installed-test ## ruff, formatting, the import contracts and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

fmt: $(VENV)/.installed-test ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: $(VENV)/.installed ## write each vendor's settings (vendors/<key>/settings.py) into README.md and .env.example
	$(BIN)/python .ci/vendor_docs.py

migrate: $(VENV)/.installed ## apply ledger migrations to DATABASE_URL
	$(BIN)/alarm-bridge db upgrade

clean: ## remove the virtualenv and local state (var/)
	rm -rf $(VENV) var .pytest_cache .ruff_cache
