# The two commands the README promises:
#   make demo   set up, index the bundled demo catalog with the bundled demo model, serve on :8000
#   make test   set up, then ruff + mypy + the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup browser compose demo index-demo serve test lint typecheck unit bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The demo is tagged with its vocabulary; the collection records it, so the server boosts the same tags.
index-demo: setup
	$(BIN)/vitrine index data/demo/catalog.jsonl --model demo --vocabulary data/demo/vocabulary.toml

demo: index-demo
	$(BIN)/vitrine serve --host $(HOST) --port $(PORT)

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

# The browser tests drive Debian's chromium (installed with apt-get when missing; VITRINE_CHROMIUM overrides).
browser:
	scripts/install_chromium.sh

# The compose files are validated with Debian's docker-compose (apt-get when missing; no engine needed).
compose:
	scripts/install_docker_compose.sh

unit: setup browser compose
	$(BIN)/pytest

test: lint typecheck unit

bench: setup
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/query.py

clean:
	rm -rf .vitrine .mypy_cache .ruff_cache .pytest_cache artifacts
