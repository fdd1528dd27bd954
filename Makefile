# Every target installs what it needs into .venv on first use; nothing is installed globally.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-dashtam test-pgharness ci-test lint bench clean

$(STAMP): pyproject.toml packages/pgharness/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e packages/pgharness -e '.[dev]'
	touch $@

install: $(STAMP)

run: $(STAMP)  ## Serve Dashtam on http://127.0.0.1:8000 (embedded PostgreSQL unless DATABASE_URL is set)
	$(BIN)/dashtam serve

test: test-dashtam test-pgharness  ## Every test

test-dashtam: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-pgharness: $(STAMP)
	cd packages/pgharness && ../../$(BIN)/python -m pytest $(PYTEST_ARGS)

ci-test: lint test  ## What .ci/run runs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	@echo "no benchmarks yet"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
