"""A scratch database for the guide's projects: the test's own, from pgharness's warm pool."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.failure_modes.guide_project import models_metadata
from tests.support.database import PgDatabase


def _on_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def server_url(pg_database: PgDatabase) -> str:
    """The PostgreSQL server of ``pg_database`` (embedded, or ``PGHARNESS_URL``)."""
    return _on_database(pg_database.sync_url, "postgres")


@pytest.fixture
def guide_database(pg_database: PgDatabase) -> str:
    """The test's own database (``pg_isolation("database")``) holding the guide project's
    tables instead of Dashtam's; yields its asyncpg URL. pgharness drops it after the test."""
    engine = create_engine(pg_database.sync_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        models_metadata().create_all(engine)
    finally:
        engine.dispose()
    return pg_database.url
