"""Test set-up: a real PostgreSQL, a fresh ``dashtam_test_<random>`` database migrated by Alembic.

The server is ``PGHARNESS_URL`` / ``DATABASE_URL`` when set, else an embedded one in a temp
dir. The environment is fixed in ``pytest_configure``, before any test module imports Dashtam;
the database itself is created the first time a test needs it. Fixture names follow pgharness
(``client``, ``async_client``, ``async_db``, ``pg_database``) so switching to it is mechanical.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncSession

_STATE: dict[str, Any] = {}


@dataclass(frozen=True)
class PgDatabase:
    """This run's test database: ``url`` for asyncpg, ``sync_url`` for psycopg."""

    name: str
    url: str
    sync_url: str

    @property
    def libpq_url(self) -> str:
        return self.sync_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _with_scheme(url: str, scheme: str) -> str:
    return scheme + "://" + url.split("://", 1)[1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pg_isolation(mode): database isolation for pgharness")
    server_url = os.environ.get("PGHARNESS_URL") or os.environ.get("DATABASE_URL")
    embedded_dir = None
    if not server_url:
        from dashtam.core.embedded import EmbeddedPostgres

        embedded_dir = Path(tempfile.mkdtemp(prefix="dashtam-tests-"))
        server = EmbeddedPostgres(embedded_dir / "pg", for_tests=True)
        _STATE["server"] = server
        server_url = server.url()
    name = f"dashtam_test_{secrets.token_hex(6)}"
    base = _with_scheme(server_url, "postgresql")
    _STATE["admin_url"] = _with_database(base, "postgres")
    _STATE["embedded_dir"] = embedded_dir
    _STATE["database"] = PgDatabase(
        name=name,
        url=_with_scheme(_with_database(base, name), "postgresql+asyncpg"),
        sync_url=_with_scheme(_with_database(base, name), "postgresql+psycopg"),
    )
    os.environ["DASHTAM_ENV"] = "test"
    os.environ["DATABASE_URL"] = _STATE["database"].url
    # argon2id stays argon2id; a cheap cost keeps the suite fast.
    os.environ["DASHTAM_PASSWORD_HASH_TIME_COST"] = "1"
    os.environ["DASHTAM_PASSWORD_HASH_MEMORY_KIB"] = "1024"
    os.environ["DASHTAM_SCHWAB_CLIENT_ID"] = "schwab-test-client"
    os.environ["DASHTAM_SCHWAB_CLIENT_SECRET"] = "schwab-test-secret"


def pytest_unconfigure(config: pytest.Config) -> None:
    database: PgDatabase = _STATE["database"]
    if _STATE.get("created"):
        with psycopg.connect(_STATE["admin_url"], autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
    server = _STATE.get("server")
    if server is not None and server.started_here:
        server.stop()
    if _STATE.get("embedded_dir"):
        shutil.rmtree(_STATE["embedded_dir"], ignore_errors=True)


@pytest.fixture(scope="session")
def pg_database() -> PgDatabase:
    """The migrated test database (created and migrated on first use, dropped at the end)."""
    database: PgDatabase = _STATE["database"]
    if not _STATE.get("created"):
        server = _STATE.get("server")
        if server is not None:
            server.start()
        with psycopg.connect(_STATE["admin_url"], autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database.name}"')
        _STATE["created"] = True
        from dashtam.migrate import upgrade_to_head

        upgrade_to_head(database.url)
    return database


@pytest.fixture(scope="session")
def _truncate_all(pg_database: PgDatabase) -> Iterator[Callable[[], None]]:
    with psycopg.connect(pg_database.libpq_url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'alembic_version'"
            )
        ]
        statement = "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE"

        def truncate() -> None:
            conn.execute(statement)

        yield truncate


@pytest.fixture
def clean_database(_truncate_all: Callable[[], None]) -> Iterator[None]:
    """Every table emptied after the test."""
    yield
    _truncate_all()


@pytest.fixture
def app(clean_database: None) -> FastAPI:
    from dashtam.main import app

    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A ``TestClient`` on the app (lifespan run), against the test database."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
async def async_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` on the app over ASGI, for ``async def`` tests."""
    from dashtam.core import db

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    await db.engine.dispose()  # its connections belong to this test's loop


@pytest.fixture
async def async_db(clean_database: None) -> AsyncIterator[AsyncSession]:
    """A session from the app's own ``SessionLocal`` (services commit on it for real)."""
    from dashtam.core import db

    async with db.SessionLocal() as session:
        yield session
    await db.engine.dispose()


@pytest.fixture
def schwab_transport(app: FastAPI) -> Iterator[Callable[[httpx.MockTransport], None]]:
    """Install an ``httpx.MockTransport`` as Schwab's HTTP boundary for this test."""
    transports: dict[str, httpx.AsyncBaseTransport] = app.state.provider_transports

    def install(transport: httpx.MockTransport) -> None:
        transports["schwab"] = transport

    yield install
    transports.pop("schwab", None)
