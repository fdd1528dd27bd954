"""Alembic environment: async (asyncpg), one advisory lock so concurrent starts migrate once."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from dashtam.core.config import to_asyncpg_url
from dashtam.models import Base

config = context.config
target_metadata = Base.metadata
# An arbitrary constant shared by every Dashtam process migrating the same database.
_MIGRATION_LOCK_ID = 0x0DA5_7A11


def _database_url() -> str:
    # Most specific first: a caller's attribute, then alembic.ini / -x style option, then env.
    url = (
        config.attributes.get("database_url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("DATABASE_URL")
    )
    if not url:
        raise RuntimeError("Set DATABASE_URL to the database to migrate")
    return to_asyncpg_url(str(url))


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
elif isinstance(config.attributes.get("connection"), Connection):
    # A caller (e.g. a test harness) handed us an open synchronous connection: use it.
    _run_sync(config.attributes["connection"])
else:
    asyncio.run(run_migrations_online())
