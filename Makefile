# The commands a contributor needs. `make test` works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck pytest docs bench run clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check fluid tests examples bench
	$(BIN)/ruff format --check fluid tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict fluid tests

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python -m bench

run: $(STAMP)
	$(BIN)/python examples/pipeline.py

clean:
	rm -rf $(VENV) site .mypy_cache .pytest_cache .ruff_cache
