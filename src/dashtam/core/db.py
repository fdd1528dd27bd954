"""The database engine and the one session factory every session in Dashtam comes from.

Code opens sessions as ``db.SessionLocal()`` at the moment it needs one (never caches a
session, never reaches for ``engine``), so tests can rebind ``SessionLocal`` to their own
transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from dashtam.core.config import get_settings

# create_async_engine does no IO: connections open on first use.
engine = create_async_engine(get_settings().async_database_url, pool_pre_ping=True)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request."""
    async with SessionLocal() as session:
        yield session
