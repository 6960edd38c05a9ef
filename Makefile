# `make` (or `make help`) lists the targets. Each target sets up its own virtualenv
# (.venv) from the pinned requirements; Python 3.11 or newer is needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.DEFAULT_GOAL := help
.PHONY: help demo run test lint unit redis-server bench loadtest clean python-version deploy register destroy

help: ## list the targets
	@echo "make TARGET, where TARGET is one of:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/\1|\2/' | \
	  awk -F'|' '{ printf "  %-10s %s\n", $$1, $$2 }'
	@echo "Python: $(PYTHON) (PYTHON=python3.12 make ... to choose another, 3.11 or newer)"

# One clear line, and no .venv made, when the Python is too old (or missing).
python-version:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
	  { echo "error: Python 3.11 or newer is needed; '$(PYTHON)' is $$($(PYTHON) -V 2>/dev/null || echo 'not found'). Try: make PYTHON=python3.11 ..." >&2; exit 1; }

# A failed step removes .venv: the next run starts clean instead of from a broken one.
$(BIN)/python: | python-version
	@$(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet --upgrade pip || \
	  { rm -rf $(VENV); echo "error: could not create $(VENV) (removed)" >&2; exit 1; }

# Stamp files: reinstall only when the requirements change.
$(VENV)/.runtime: requirements.txt | $(BIN)/python
	@$(BIN)/python -m pip install --quiet -r requirements.txt || \
	  { rm -rf $(VENV); echo "error: installing requirements.txt failed ($(VENV) removed)" >&2; exit 1; }
	@touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	@$(BIN)/python -m pip install --quiet -r requirements-dev.txt || \
	  { rm -rf $(VENV); echo "error: installing requirements-dev.txt failed ($(VENV) removed)" >&2; exit 1; }
	@touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime ## the relay in front of the Threatscore simulator, examples to paste; Ctrl-C stops both
	@$(BIN)/python -m simulator demo --port $(PORT)

# Local development: no token check unless RELAY_AUTH says otherwise (the relay warns).
# It first says where lookups go (the real Threatscore refuses unlisted addresses: `make demo` shows answers).
run: $(VENV)/.runtime ## serve the relay on http://127.0.0.1:PORT (PORT=8080 by default; RELAY_AUTH=none unless set)
	@RELAY_AUTH=$${RELAY_AUTH:-none} $(BIN)/python -c 'import sys; from relay.app import print_where_lookups_go; sys.exit(print_where_lookups_go())'
	RELAY_AUTH=$${RELAY_AUTH:-none} $(BIN)/functions-framework --target=relay --source=main.py --host=127.0.0.1 --port=$(PORT)

test: lint unit ## every check: ruff, then every test

lint: $(VENV)/.dev ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The cache tests need a real Redis server; install Debian's when it is missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

unit: $(VENV)/.dev redis-server ## the tests (pytest)
	$(BIN)/python -m pytest

bench: $(VENV)/.dev ## measure the speed targets (one markdown table)
	$(BIN)/python bench/bench.py

# The relay under load: 5,000 requests, 32 clients, 5 % upstream faults.
# LOADTEST_ARGS="--instances 3 --redis": three relays sharing a redis-server, restarted mid-run.
loadtest: $(VENV)/.dev redis-server ## the relay under load, in front of the simulator with faults
	$(BIN)/python -m loadtest $(LOADTEST_ARGS)

# Everything the targets make, so the tree is as a fresh clone (deploy.env, yours, stays).
clean: ## remove what the targets made: .venv, caches, .simulator/, .deploy/, bench-results/
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .schemathesis .simulator .deploy bench-results
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Google Cloud (see docs/deploying.md): settings from the environment
# and deploy.env (deploy.env.example). DRY_RUN=1 prints the gcloud commands instead of running them.
deploy: $(VENV)/.dev ## deploy to Google Cloud Functions (DRY_RUN=1 prints the gcloud commands)
	$(BIN)/python -m deploy deploy

# Registers the module type in XDR with an API client's XDR_CLIENT_ID / XDR_CLIENT_SECRET.
register: $(VENV)/.dev ## register the module type in XDR (DRY_RUN=1 shows the requests)
	$(BIN)/python -m deploy register

# Removes what make deploy made for the function (same settings); CONFIRM=<project id> to delete.
destroy: $(VENV)/.dev ## remove everything make deploy made (DRY_RUN=1 prints the commands; CONFIRM=PROJECT deletes)
	$(BIN)/python -m deploy destroy
