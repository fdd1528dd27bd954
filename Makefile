# Every target installs what it needs into .venv on first use; nothing is installed globally.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The troubleshooting guide's versions, in an environment of their own.
COMPAT_VENV ?= .venv-compat
COMPAT_BIN := $(COMPAT_VENV)/bin
COMPAT_STAMP := $(COMPAT_VENV)/.installed
COMPAT_PINS := "sqlalchemy[asyncio]==2.0.43" "pytest-asyncio==1.2.0"

# `make test-up`: one embedded PostgreSQL kept running in .pgharness/ (git-ignored). While it is
# up, Dashtam's test targets point pgharness at it (PGHARNESS_URL), so repeated runs skip the
# server start and reuse the schema template. A PGHARNESS_URL set by the caller wins.
TEST_SERVER_DIR := .pgharness/server
TEST_SERVER_URL_FILE := .pgharness/url
ifeq ($(origin PGHARNESS_URL),undefined)
PGHARNESS_URL := $(shell [ -f $(TEST_SERVER_URL_FILE) ] && [ -f $(TEST_SERVER_DIR)/postmaster.pid ] && cat $(TEST_SERVER_URL_FILE))
endif
ifneq ($(PGHARNESS_URL),)
export PGHARNESS_URL
endif

# The machine's PostgreSQL, for CI's second run.
MACHINE_PG_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

# pytest exits 5 when it collected nothing: every target below treats that as a failure.
PYTEST := $(BIN)/python -m pytest
CI_PYTEST_ARGS := -n 2 -p randomly -q --timeout=300
# `make test` runs each suite on this many xdist workers (TEST_WORKERS=0: one process).
TEST_WORKERS ?= 2
COVERAGE_ENV := COVERAGE_RCFILE=$(CURDIR)/pyproject.toml COVERAGE_FILE=$(CURDIR)/.coverage

.PHONY: install run test test-dashtam test-pgharness test-bench test-unit test-integration test-api \
	test-up test-down ci-test ci-lint ci-embedded ci-machine ci-compat ci-coverage-gate \
	compat-install lint bench load clean

$(STAMP): pyproject.toml packages/pgharness/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e 'packages/pgharness[alembic]' -e '.[dev,bench]'
	touch $@

install: $(STAMP)

run: $(STAMP)  ## Serve Dashtam on http://127.0.0.1:8000 with a job worker (embedded PostgreSQL unless DATABASE_URL is set)
	$(BIN)/dashtam serve --worker

# The benchmarks' check (`make test-bench`, a miniature `make bench`) runs in CI (`make ci-test`).
# The two suites run at once, each on TEST_WORKERS workers: much of each one's time is spent
# waiting (for the subprocesses and servers its tests start), which the other fills. Each
# suite's output is shown whole, when it ends.
test: $(STAMP)  ## Dashtam's and pgharness's suites, at once, each on two workers
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-dashtam test-pgharness

# Both suites write bytecode even where PYTHONDONTWRITEBYTECODE is set, as a developer's
# machine does: without it every process compiles Dashtam's and pgharness's modules again and
# pytest redoes its assertion rewrites (of test modules and of the plugins, which pgharness's
# many inner pytest processes would otherwise each redo): about 15% of Dashtam's suite's CPU.
WRITE_BYTECODE := env -u PYTHONDONTWRITEBYTECODE

test-dashtam: $(STAMP)
	$(WRITE_BYTECODE) $(PYTEST) tests -n $(TEST_WORKERS) $(PYTEST_ARGS)

# pgharness's suite picks its servers itself (embedded, and the machine's for its external
# tests): the test-up server is for Dashtam's suite.
test-pgharness: $(STAMP)
	cd packages/pgharness && $(WRITE_BYTECODE) -u PGHARNESS_URL \
		$(CURDIR)/$(PYTEST) -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-unit: $(STAMP)  ## Dashtam's unit tests (no database)
	$(PYTEST) tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)  ## Dashtam's services and job workers against PostgreSQL
	$(PYTEST) tests/integration tests/jobs $(PYTEST_ARGS)

test-api: $(STAMP)  ## Dashtam's HTTP API, sync and async styles, and its security tests
	$(PYTEST) tests/api tests/api_async tests/security $(PYTEST_ARGS)

test-up: $(STAMP)  ## Keep an embedded PostgreSQL running for fast repeated test runs
	@mkdir -p .pgharness
	@$(BIN)/python -c 'import sys; from pathlib import Path; from dashtam.core.embedded import EmbeddedPostgres; server = EmbeddedPostgres(Path(sys.argv[1]), for_tests=True); server.start(); print(server.url())' $(TEST_SERVER_DIR) > $(TEST_SERVER_URL_FILE)
	@echo "test server up: PGHARNESS_URL=$$(cat $(TEST_SERVER_URL_FILE)) (make test uses it; make test-down stops it)"

test-down:  ## Stop the server of `make test-up` and delete its data
	@if [ -d $(TEST_SERVER_DIR) ]; then $(BIN)/python -c 'import sys; from pathlib import Path; from dashtam.core.embedded import EmbeddedPostgres; EmbeddedPostgres(Path(sys.argv[1])).remove()' $(TEST_SERVER_DIR); fi
	rm -rf $(TEST_SERVER_DIR) $(TEST_SERVER_URL_FILE)

# CI (.ci/run runs exactly this): lint; both suites on the embedded default under coverage,
# following subprocesses (pytester runs, xdist workers); Dashtam's suite again on the
# machine's PostgreSQL; Dashtam's suite (pgharness driving it, and the guide's five set-ups
# in tests/failure_modes) with the guide's versions; the coverage gates; the miniature
# `make bench`. Every test run: random order, two workers, a per-test timeout.
ci-test: ci-lint ci-embedded ci-coverage-gate ci-machine ci-compat test-bench  ## What CI runs (.ci/run)

ci-lint: lint

ci-embedded: $(STAMP)
	rm -f .coverage .coverage.*
	env -u PGHARNESS_URL $(COVERAGE_ENV) $(BIN)/coverage run -m pytest tests $(CI_PYTEST_ARGS)
	cd packages/pgharness && env -u PGHARNESS_URL $(COVERAGE_ENV) $(CURDIR)/$(BIN)/coverage run -m pytest $(CI_PYTEST_ARGS)

# pgharness's own suite already runs its projects against both kinds of server.
ci-machine: $(STAMP)
	PGHARNESS_URL=$(MACHINE_PG_URL) $(PYTEST) tests $(CI_PYTEST_ARGS)

ci-compat: compat-install
	$(COMPAT_BIN)/python -c 'import sqlalchemy, pytest_asyncio; assert (sqlalchemy.__version__, pytest_asyncio.__version__) == ("2.0.43", "1.2.0"), (sqlalchemy.__version__, pytest_asyncio.__version__)'
	env -u PGHARNESS_URL $(COMPAT_BIN)/python -m pytest tests $(CI_PYTEST_ARGS)

ci-coverage-gate: $(STAMP)
	$(BIN)/coverage combine --quiet
	@echo "--- src/dashtam (branch coverage, gate 90%)"
	$(BIN)/coverage report --include='*/src/dashtam/*' --fail-under=90 --precision=1
	@echo "--- packages/pgharness (branch coverage, gate 90%)"
	$(BIN)/coverage report --include='*/packages/pgharness/src/*' --fail-under=90 --precision=1

$(COMPAT_STAMP): pyproject.toml packages/pgharness/pyproject.toml
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_BIN)/python -m pip install --quiet --upgrade pip
	$(COMPAT_BIN)/python -m pip install --quiet -e 'packages/pgharness[alembic]' -e '.[dev]' $(COMPAT_PINS)
	touch $@

compat-install: $(COMPAT_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests benchmarks packages/pgharness/src packages/pgharness/tests
	$(BIN)/mypy

bench: $(STAMP)  ## Every benchmark side by side; rewrites docs/benchmarks.md and its charts
	env -u PGHARNESS_URL $(BIN)/python benchmarks/report.py

# The benchmarks' own check: a tiny `make bench` into a temp folder (every strategy passes its
# suite, every table and chart is written).
test-bench: $(STAMP)
	env -u PGHARNESS_URL $(PYTEST) benchmarks $(PYTEST_ARGS)

load: $(STAMP)  ## The long load and fault benchmark (benchmarks/load.py)
	$(BIN)/python benchmarks/load.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
