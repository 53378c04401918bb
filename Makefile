# The two commands: `make demo` and `make test`. Both do all set-up on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip holds every downloaded wheel (~1 GB) in TMPDIR until it installs, and a small /tmp
# ran out of space in CI: its temporary files go under the venv instead. A clean CI clone
# has no use for pip's wheel cache either (a second copy of those wheels).
PIP := TMPDIR="$(CURDIR)/$(VENV)" $(BIN)/python -m pip install -q --disable-pip-version-check \
       $(if $(CI),--no-cache-dir)

.PHONY: demo test lint setup system-deps stack-up stack-down clean api-contract faults

# DATA=path FORMAT=movielens|yoochoose|... to use a log of your own (DATA_COLUMNS=user,item,,time
# for a headerless csv).
demo: setup
	@test -z "$(DATA)" -o -n "$(FORMAT)" || { echo "make demo DATA=$(DATA) needs FORMAT= too (movielens, yoochoose, rees46, ...)"; exit 2; }
	$(BIN)/streamrec stack up
	$(BIN)/streamrec stack check
	$(BIN)/streamrec demo $(if $(DATA),--data "$(DATA)" --format "$(FORMAT)") $(if $(DATA_COLUMNS),--columns "$(DATA_COLUMNS)")

test: setup lint
	@bash infra/system-deps.sh browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	KERAS_BACKEND=jax $(BIN)/python -m pytest tests/unit $(PYTEST_ARGS) -m keras

# ruff, then the import contracts in pyproject.toml (an import pointing up the layers fails).
lint: setup
	$(BIN)/ruff check services streams model infra benchmarks tests
	$(BIN)/lint-imports --no-cache

# Fault injection, kept out of `make test` (minutes per scenario; docs/RELIABILITY.md):
# kill -9 chaos, SIGSTOP past the session timeout, the broker killed for 5, 35 and 120 s
# (FAULTS_ARGS="--runs 3" adds to each), Redis killed and restarted under a worker,
# Redis refusing connections and black-holed for 60 s under a worker and the API, a
# history check through the API while workers are killed, then poisoned champions.
BOUNCE = $(BIN)/python -m tests.faults.worker_chaos --fault broker --every 10 10
faults: setup
	$(BIN)/streamrec stack up
	$(BIN)/python -m tests.faults.worker_chaos --fault kill $(FAULTS_ARGS)
	$(BIN)/python -m tests.faults.worker_chaos --fault stop --events 45000 --rate 1000 $(FAULTS_ARGS)
	$(BOUNCE) --down-s 5 --events 30000 --rate 1000 $(FAULTS_ARGS)
	$(BOUNCE) --down-s 35 --events 60000 --rate 1000 $(FAULTS_ARGS)
	$(BOUNCE) --down-s 120 --events 75000 --rate 500 $(FAULTS_ARGS)
	$(BIN)/python -m tests.faults.redis_restart
	$(BIN)/python -m tests.faults.redis_outage --mode refuse
	$(BIN)/python -m tests.faults.redis_outage --mode blackhole
	$(BIN)/python -m tests.faults.api_history
	$(BIN)/python -m tests.faults.poison_models

# schemathesis with every check against the running API, without and with keys, on a
# stack of its own unless STREAMREC_* say otherwise (docs/RELIABILITY.md).
api-contract: setup
	$(BIN)/python tests/contract/api_contract.py

setup: $(STAMP) system-deps

# Re-installs when pyproject.toml or the versions it resolves to (constraints.txt) change.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 (or run make PYTHON=/path/to/python3.11)"; exit 1; }
	@# a venv made without pip (Debian without python3.11-venv) is made again
	@test -x $(BIN)/pip || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(PIP) -U pip
	$(PIP) -c constraints.txt -e '.[cpu,dev]'
	@touch $@

system-deps:
	@bash infra/system-deps.sh

stack-up: setup
	$(BIN)/streamrec stack up

stack-down:
	@# a failing down fails clean: deleting .local under a running broker orphans it
	@if test -x $(BIN)/streamrec; then $(BIN)/streamrec stack down; fi

# Without .venv, stack-down cannot stop the stack: a process still named in .local's pid
# files would be orphaned, holding its ports, by deleting .local.
clean: stack-down
	@for f in .local/*/*.pid; do \
	  if test -f "$$f" && kill -0 "$$(cat "$$f")" 2>/dev/null; then \
	    echo "make clean: $$f names a running process (pid $$(cat "$$f")): stop it first (make setup, then make stack-down)"; exit 1; \
	  fi; \
	done
	rm -rf .local $(VENV)
