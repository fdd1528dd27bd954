"""The database engine and the one session factory every session in Dashtam comes from.

Code opens sessions as ``db.SessionLocal()`` at the moment it needs one (never caches a
session, never reaches for ``engine``), so tests can rebind ``SessionLocal`` to their own
transaction.

Every wait is bounded (``DASHTAM_DB_*`` settings): a pooled connection, a new connection, a
statement, a row lock. When PostgreSQL goes away, requests fail fast with 503 and the pool
recovers by itself: ``pool_pre_ping`` replaces connections that died while idle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from dashtam.core.config import Settings, get_settings


def engine_options(settings: Settings) -> dict[str, Any]:
    """Pool sizing and timeouts for ``create_async_engine`` (also used by ``dashtam`` tools)."""
    return {
        "pool_pre_ping": True,
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        # Parameters can hold user input; never copy them into logs or exception texts.
        "hide_parameters": True,
        "connect_args": {
            "timeout": settings.db_connect_timeout,
            "command_timeout": settings.db_statement_timeout,
            "server_settings": {
                "lock_timeout": f"{int(settings.db_lock_timeout * 1000)}ms",
                "application_name": "dashtam",
            },
        },
    }


# create_async_engine does no IO: connections open on first use.
engine = create_async_engine(get_settings().async_database_url, **engine_options(get_settings()))
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request."""
    async with SessionLocal() as session:
        yield session
