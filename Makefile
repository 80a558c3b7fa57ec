# sipagent: `make run` starts the server, `make test` runs the whole suite.
# Both create .venv and install everything on first use; later runs reuse it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test install peers lint typecheck unit clean

run: install
	$(BIN)/sipagent serve $(ARGS)

test: install peers
	$(BIN)/ruff check sipagent tests scripts
	$(BIN)/ruff format --check sipagent tests scripts
	$(BIN)/mypy
	SIPAGENT_REQUIRE_PEERS=1 $(BIN)/pytest -n 2 -q $(PYTEST_ARGS)

install: $(STAMP)

$(VENV)/bin/python:
	scripts/ensure-venv.sh $(PYTHON) $(VENV)

$(STAMP): pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The real SIP peers the interop tests talk to (Debian packages).
peers:
	scripts/install-peers.sh

lint:
	$(BIN)/ruff check sipagent tests scripts

typecheck:
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -n 2 -q -m "not peer"

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
