# `make run` serves the relay locally, `make test` runs every check, `make bench` measures
# the speed targets (docs/performance.md).
# Each sets up its own virtualenv from the pinned requirements.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
RELAY_AUTH ?= none
export RELAY_AUTH

.PHONY: run test lint unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files: reinstall only when the requirements change.
$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime
	$(BIN)/functions-framework --target=relay --source=main.py --host=127.0.0.1 --port=$(PORT)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: $(VENV)/.dev
	$(BIN)/python -m pytest

test: lint unit

bench: $(VENV)/.dev
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
