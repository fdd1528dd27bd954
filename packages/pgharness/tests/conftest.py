"""Shared helpers for pgharness's own tests: pytester projects against real PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

# Imported before any pytester snapshot of sys.modules: a re-import after a snapshot is
# restored registers SQLAlchemy's PostgreSQL functions twice (SAWarning noise).
import sqlalchemy.dialects.postgresql  # noqa: F401

#: The machine's PostgreSQL server (trust auth), used for the external-URL tests.
EXTERNAL_URL = os.environ.get("PGHARNESS_TEST_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def admin() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the external server, for checking what runs left."""
    with psycopg.connect(EXTERNAL_URL, autocommit=True) as conn:
        yield conn


def database_names(conn: psycopg.Connection[tuple[object, ...]], like: str = "pgh%") -> set[str]:
    rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,))
    return {str(row[0]) for row in rows}


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester project whose inner runs see none of the outer run's pgharness settings."""
    monkeypatch.delenv("PGHARNESS_URL", raising=False)
    # Inner runs get a clean plugin set: the outer run's -p options do not leak in.
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
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
