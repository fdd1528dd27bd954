"""Reads without a transaction (``db.reading``, ``db.reading_briefly``), on a pooled engine as
in production.

A route that only reads sends no BEGIN and no ROLLBACK; a route that writes authenticates
outside its transaction and then begins one of its own.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from dashtam.core import db
from dashtam.models import User

pytestmark = pytest.mark.pg_isolation("database")


async def _connection_in_transaction(connection: AsyncConnection) -> bool:
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    in_transaction: bool = driver.is_in_transaction()
    return in_transaction


async def _in_transaction(session: AsyncSession) -> bool:
    return await _connection_in_transaction(await session.connection())


async def test_a_reading_connection_reads_outside_a_transaction() -> None:
    async with db.reading() as connection:
        await connection.scalar(select(User.id).limit(1))

        assert not await _connection_in_transaction(connection)


async def test_a_reading_connection_goes_back_to_the_pool() -> None:
    pool = db.SessionLocal.kw["bind"].sync_engine.pool
    async with db.reading() as connection:
        await connection.scalar(select(User.id).limit(1))
        held = pool.checkedout()

    assert pool.checkedout() == held - 1


async def test_an_ordinary_session_still_reads_in_a_transaction() -> None:
    async with db.SessionLocal() as session:
        await session.scalar(select(User.id).limit(1))

        assert await _in_transaction(session)


async def test_a_brief_read_hands_the_connection_back_for_a_transaction_of_its_own() -> None:
    async with db.SessionLocal() as session:
        async with db.reading_briefly(session):
            await session.scalar(select(User.id).limit(1))
            assert not await _in_transaction(session)
        assert not session.in_transaction()

        await session.scalar(select(User.id).limit(1))
        assert await _in_transaction(session)


async def test_core_reads_run_on_the_connection_a_brief_read_holds() -> None:
    async with db.SessionLocal() as session, db.reading_briefly(session):
        kept = await db.connection_of(session)

        assert kept is await session.connection()
        await kept.scalar(select(User.id).limit(1))
        assert not await _in_transaction(session)


async def test_after_a_brief_read_core_reads_take_the_next_transactions_connection() -> None:
    async with db.SessionLocal() as session:
        async with db.reading_briefly(session):
            await (await db.connection_of(session)).scalar(select(User.id).limit(1))

        connection = await db.connection_of(session)
        await connection.scalar(select(User.id).limit(1))
        assert connection is await session.connection()
        assert await _in_transaction(session)
