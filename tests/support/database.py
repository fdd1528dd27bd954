"""Raw access to the test's database, for checks the app's own sessions cannot make."""

from __future__ import annotations

from typing import Protocol

import psycopg


class PgDatabase(Protocol):
    """What the ``pg_database`` fixture gives: the test database's name and URLs."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def sync_url(self) -> str: ...


def libpq_url(sync_url: str) -> str:
    return sync_url.replace("postgresql+psycopg://", "postgresql://", 1)


def raw_connection(database: PgDatabase, *, autocommit: bool = False) -> psycopg.Connection:
    """A psycopg connection of its own: it sees only what other connections committed."""
    return psycopg.connect(libpq_url(database.sync_url), autocommit=autocommit)
