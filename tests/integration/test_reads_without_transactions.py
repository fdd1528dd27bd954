"""Reads without a transaction (``db.read_only``), on a pooled engine as in production.

A read-only request sends no BEGIN and no ROLLBACK, and cannot write by mistake: its
statements would autocommit one by one.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core import db
from dashtam.models import User

pytestmark = pytest.mark.pg_isolation("database")


async def _in_transaction(session: AsyncSession) -> bool:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    in_transaction: bool = driver.is_in_transaction()
    return in_transaction


async def test_a_read_only_session_reads_outside_a_transaction() -> None:
    async with db.SessionLocal() as session:
        await db.read_only(session)
        await session.scalar(select(User.id).limit(1))

        assert not await _in_transaction(session)


async def test_an_ordinary_session_still_reads_in_a_transaction() -> None:
    async with db.SessionLocal() as session:
        await session.scalar(select(User.id).limit(1))

        assert await _in_transaction(session)


async def test_a_read_only_session_refuses_to_write() -> None:
    async with db.SessionLocal() as session:
        await db.read_only(session)
        session.add(User(email="ro@example.com", password_hash="x"))
        with pytest.raises(db.ReadOnlySessionError):
            await session.flush()
        session.expunge_all()
        with pytest.raises(db.ReadOnlySessionError):
            await session.execute(update(User).values(name="changed"))


async def test_a_brief_read_hands_the_connection_back_for_a_transaction_of_its_own() -> None:
    async with db.SessionLocal() as session:
        async with db.reading_briefly(session):
            await session.scalar(select(User.id).limit(1))
            assert not await _in_transaction(session)
        assert not session.in_transaction()

        await session.scalar(select(User.id).limit(1))
        assert await _in_transaction(session)


async def test_core_reads_run_on_the_connection_a_read_only_session_holds() -> None:
    async with db.SessionLocal() as session:
        await db.read_only(session)
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
