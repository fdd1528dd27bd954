"""A scratch database for the guide's projects, on the server this run's tests use."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from tests.failure_modes.guide_project import models_metadata
from tests.support.database import PgDatabase, libpq_url


def _on_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def server_url(pg_database: PgDatabase) -> str:
    """The PostgreSQL server of ``pg_database`` (embedded, or ``PGHARNESS_URL``)."""
    return _on_database(pg_database.sync_url, "postgres")


@pytest.fixture
def guide_database(server_url: str) -> Iterator[str]:
    """A new database with the guide project's tables; yields its asyncpg URL, then drops it."""
    name = f"dashtam_guide_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(server_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = create_engine(_on_database(server_url, name))
        try:
            models_metadata().create_all(engine)
        finally:
            engine.dispose()
        yield _on_database(server_url, name).replace("+psycopg", "+asyncpg", 1)
    finally:
        with psycopg.connect(libpq_url(server_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
