# `make run` serves the relay locally, `make test` runs every check; `make bench` measures
# the speed targets and `make loadtest` the relay under load (see README.md).
# Each sets up its own virtualenv from the pinned requirements.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: run test lint unit redis-server bench loadtest clean deploy register

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

# Local development: no token check unless RELAY_AUTH says otherwise (the relay warns).
run: $(VENV)/.runtime
	RELAY_AUTH=$${RELAY_AUTH:-none} $(BIN)/functions-framework --target=relay --source=main.py --host=127.0.0.1 --port=$(PORT)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The cache tests need a real Redis server; install Debian's when it is missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

unit: $(VENV)/.dev redis-server
	$(BIN)/python -m pytest

test: lint unit

bench: $(VENV)/.dev
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# The relay under load: 5,000 requests, 32 clients, 5 % upstream faults.
loadtest: $(VENV)/.dev
	$(BIN)/python -m loadtest

# Google Cloud (see README.md, "Deploying to Google Cloud Functions"): settings from the environment
# and deploy.env (deploy.env.example). DRY_RUN=1 prints the gcloud commands instead of running them.
deploy: $(VENV)/.dev
	$(BIN)/python -m deploy deploy

# Registers the module type in XDR with an API client's XDR_CLIENT_ID / XDR_CLIENT_SECRET.
register: $(VENV)/.dev
	$(BIN)/python -m deploy register
