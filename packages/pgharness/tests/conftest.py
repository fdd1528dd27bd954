"""Shared helpers for pgharness's own tests: pytester projects against real PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import _traceback_ast

# Imported here, before any pytester snapshot of sys.modules: once an in-process inner run has
# restored the snapshot, re-importing asyncpg's C extension crashes the interpreter, and
# re-importing SQLAlchemy's PostgreSQL dialect registers its functions twice (SAWarning noise).
import asyncpg  # noqa: F401
import psycopg
import pytest
import sqlalchemy.dialects.postgresql
import sqlalchemy.ext.asyncio  # noqa: F401
from _forked_pytest import ForkServer
from pgharness._embedded import EmbeddedServer, cache_dir, runtime_base

# The in-process inner runs print many tracebacks through the same SQLAlchemy modules.
_traceback_ast.keep_parses()

#: The machine's PostgreSQL server (trust auth), used for the external-URL tests.
EXTERNAL_URL = os.environ.get("PGHARNESS_TEST_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

#: Options every inner run gets. The repository's environment also holds Dashtam's test tools,
#: whose pytest plugins a pgharness user does not have; loading them (Hypothesis, through
#: schemathesis) costs each inner run two seconds of CPU and changes nothing pgharness does.
INNER_ADDOPTS = "-p no:schemathesis -p no:hypothesispytest"


#: Where embedded servers keep their ``initdb`` result, read before pytester moves HOME. Inner
#: runs share it, as a developer's runs do (``no_initdb_cache`` for a first start).
INITDB_CACHE = cache_dir()
#: Where the shared server's folder goes, read before ``runtime_dir`` moves it.
RUNTIME_BASE = runtime_base()


@pytest.fixture
def admin() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the external server, for checking what runs left."""
    with psycopg.connect(EXTERNAL_URL, autocommit=True) as conn:
        yield conn


def database_names(conn: psycopg.Connection[tuple[object, ...]], like: str = "pgh%") -> set[str]:
    rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,))
    return {str(row[0]) for row in rows}


@pytest.fixture(scope="session")
def shared_server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An embedded server for the inner runs of this run, started once and shared by the
    xdist workers (one run id): their templates are built once, not per inner run."""
    workerinput = getattr(request.config, "workerinput", None)
    uid = str(workerinput["testrunuid"]) if workerinput else uuid.uuid4().hex
    run_id = hashlib.sha256(f"{uid}:inner runs".encode()).hexdigest()[:10]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGHARNESS_RUNTIME_DIR", str(RUNTIME_BASE))
        mp.setenv("PGHARNESS_CACHE_DIR", str(INITDB_CACHE))
        server = EmbeddedServer(run_id)
    try:
        yield server.address.url("postgresql", "postgres")
    finally:
        server.close()


@pytest.fixture(scope="session")
def fork_server() -> Iterator[ForkServer]:
    """Starts this process's inner ``pytest`` commands (see ``_forked_pytest``)."""
    server = ForkServer()
    yield server
    server.close()


@pytest.fixture
def pytester(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    shared_server_url: str,
    fork_server: ForkServer,
) -> pytest.Pytester:
    """pytester whose inner runs (in process or not) use the run's shared server
    (``PGHARNESS_URL``), the shared initdb cache and ``INNER_ADDOPTS``; pytester itself has
    dropped the outer run's ``PYTEST_ADDOPTS``. A test that needs a server of its own (the
    embedded default, or ``server_args``) uses ``project``. ``runpytest_subprocess`` forks its
    process from ``fork_server``.

    Inner runs write no bytecode: a project's module rewritten within a second at the same
    size would otherwise be imported from its stale cache.
    """
    monkeypatch.setattr(pytester, "popen", _forking_popen(pytester, fork_server))
    monkeypatch.setenv("PGHARNESS_URL", shared_server_url)
    monkeypatch.setenv("PYTEST_ADDOPTS", INNER_ADDOPTS)
    monkeypatch.setenv("PGHARNESS_CACHE_DIR", str(INITDB_CACHE))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return pytester


def _forking_popen(pytester: pytest.Pytester, fork_server: ForkServer) -> Any:
    """``Pytester.popen`` that forks ``pytest`` commands from ``fork_server``, with the
    environment ``Pytester.popen`` gives them (the working directory added to ``PYTHONPATH``).
    """
    original = pytester.popen

    def popen(
        cmdargs: Sequence[str],
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
        stdin: Any = pytester.CLOSE_STDIN,
        **kw: Any,
    ) -> Any:
        to_files = hasattr(stdout, "name") and hasattr(stderr, "name")
        if to_files and stdin is pytester.CLOSE_STDIN and not kw:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
            forked = fork_server.popen(
                cmdargs, cwd=os.getcwd(), env=env, stdout=stdout.name, stderr=stderr.name
            )
            if forked is not None:
                return forked
        return original(cmdargs, stdout=stdout, stderr=stderr, stdin=stdin, **kw)

    return popen


@pytest.fixture
def unforked(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester whose ``runpytest_subprocess`` starts a new interpreter instead of forking the
    preloaded server: for a test of what happens when a module is first imported after
    pgharness started (the server has psycopg imported already)."""
    monkeypatch.delattr(pytester, "popen")
    return pytester


@pytest.fixture
def no_initdb_cache(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """Inner runs start their embedded servers as on a machine that never ran pgharness:
    ``initdb`` runs, and its result is cached into this empty folder."""
    path = tmp_path_factory.mktemp("initdb-cache")
    monkeypatch.setenv("PGHARNESS_CACHE_DIR", str(path))
    return path


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester project whose inner runs see none of the outer run's pgharness settings:
    they start their own embedded server unless a test passes ``--pg-url``."""
    monkeypatch.delenv("PGHARNESS_URL", raising=False)
    return pytester


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private folder for the embedded servers of inner runs (short: it holds a socket)."""
    import shutil
    import tempfile

    root = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="pght", dir=root))
    monkeypatch.setenv("PGHARNESS_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_dirs(base: Path) -> set[str]:
    """Run directories of embedded servers that currently exist under ``base``."""
    return {p.name for p in base.iterdir() if p.is_dir() and (p / "owners.json").exists()}


def process_running(pid: int) -> bool:
    """Alive and not a zombie (an exited process waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def postgres_running_in(path: Path) -> bool:
    pid_file = path / "data" / "postmaster.pid"
    if not pid_file.exists():
        return False
    return process_running(int(pid_file.read_text().split("\n", 1)[0]))


class DeveloperDatabase:
    """A database of the developer's own on the machine's server, beside pgharness's.

    Projects point their app's settings at it (``.url``, ``.sync_url``): if anything of a run
    reaches it, ``assert_untouched`` fails.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        base = EXTERNAL_URL.rsplit("/", 1)[0]
        self.libpq_url = f"{base}/{name}"
        self.url = self.libpq_url.replace("postgresql://", "postgresql+asyncpg://", 1)
        self.sync_url = self.libpq_url.replace("postgresql://", "postgresql+psycopg://", 1)
        self.own_tables: list[str] = []

    def tables(self) -> list[str]:
        with psycopg.connect(self.libpq_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT schemaname || '.' || tablename FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
            )
            return [str(row[0]) for row in rows]

    def schemas(self) -> list[str]:
        with psycopg.connect(self.libpq_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                "AND nspname NOT IN ('information_schema', 'public') ORDER BY 1"
            )
            return [str(row[0]) for row in rows]

    def create_tables(self, metadata: object) -> None:
        """Give the database an app's tables (``MetaData``), so that a write escaping a test
        would succeed here, and be seen."""
        from sqlalchemy import create_engine

        engine = create_engine(self.sync_url)
        try:
            metadata.create_all(engine)  # type: ignore[attr-defined]
        finally:
            engine.dispose()
        self.own_tables = self.tables()

    def row_counts(self) -> dict[str, int]:
        with psycopg.connect(self.libpq_url, autocommit=True) as conn:
            counts: dict[str, int] = {}
            for table in self.tables():
                schema, name = table.split(".", 1)
                row = conn.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()
                counts[table] = int(row[0]) if row else 0
            return counts

    def assert_untouched(self) -> None:
        """No table or schema beyond those it was given, and not one row in any of them."""
        assert self.tables() == self.own_tables, f"tables were created in {self.name}"
        assert self.schemas() == [], f"schemas were created in {self.name}"
        assert all(n == 0 for n in self.row_counts().values()), self.row_counts()


@pytest.fixture
def developer_database(
    admin: psycopg.Connection[tuple[object, ...]],
) -> Iterator[DeveloperDatabase]:
    """An empty database standing for the developer's own, dropped after the test."""
    import uuid

    database = DeveloperDatabase(f"devdb_{uuid.uuid4().hex[:12]}")
    admin.execute(f'CREATE DATABASE "{database.name}"')
    try:
        yield database
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')


@pytest.fixture(params=["embedded", "external"])
def server_args(request: pytest.FixtureRequest, runtime_dir: Path) -> list[str]:
    """Command-line arguments for an inner run: the embedded default, or the machine's server."""
    return [] if request.param == "embedded" else [f"--pg-url={EXTERNAL_URL}"]


def metadata_of(source: str) -> object:
    """The ``Base.metadata`` of an app's source text, loaded under a name of its own (the
    project's own ``myapp`` stays unimported in this process); for ``create_tables``."""
    import sys
    import types
    import uuid

    module = types.ModuleType(f"pgharness_models_{uuid.uuid4().hex[:8]}")
    sys.modules[module.__name__] = module  # SQLAlchemy resolves annotations through it
    try:
        exec(source, module.__dict__)
        return module.Base.metadata
    finally:
        del sys.modules[module.__name__]
