"""The database engine and the one session factory every session in Dashtam comes from.

Code opens sessions as ``db.SessionLocal()`` at the moment it needs one (never caches a
session, never reaches for ``engine``), so tests can rebind ``SessionLocal`` to their own
transaction.

Every wait is bounded (``DASHTAM_DB_*`` settings): a pooled connection, a new connection, a
statement, a row lock. When PostgreSQL goes away, requests fail fast with 503 and the pool
recovers by itself: a checkout that finds its connection closed by the server takes a fresh
one instead (no ping round trip: the driver already knows), and the first statement that
fails on a dropped connection invalidates every connection opened before it.

Round trips are the cost of a request here, so reads that need no transaction run without
BEGIN / ROLLBACK: a route that only reads takes a bare connection (``reading``: Core
statements, no session); a route that writes authenticates outside its transaction
(``reading_briefly``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from asyncpg.exceptions import (
    ConnectionDoesNotExistError,
    InternalClientError,
    OperatorInterventionError,
    PostgresConnectionError,
)
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import ConnectionPoolEntry

from dashtam.core.config import Settings, get_settings


def engine_options(settings: Settings) -> dict[str, Any]:
    """Pool sizing and timeouts for ``create_async_engine`` (also used by ``dashtam`` tools)."""
    return {
        "pool_size": settings.pool_size,
        "max_overflow": settings.pool_overflow,
        "pool_timeout": settings.db_pool_timeout,
        # Parameters can hold user input; never copy them into logs or exception texts.
        "hide_parameters": True,
        # An autocommitting connection (``reading``) has no transaction to roll back.
        "skip_autocommit_rollback": True,
        "connect_args": {
            "timeout": settings.db_connect_timeout,
            "command_timeout": settings.db_statement_timeout,
            "server_settings": {
                "lock_timeout": f"{int(settings.db_lock_timeout * 1000)}ms",
                "application_name": "dashtam",
            },
        },
    }


def refuse_closed_connections(engine: AsyncEngine) -> None:
    """Make ``engine``'s pool replace, at checkout, a connection the server has closed.

    When PostgreSQL restarts or ends a backend it tells the client and closes the socket;
    asyncpg marks the connection closed as soon as the event loop reads that. Checking the
    mark costs nothing, where ``pool_pre_ping`` would spend a round trip on every checkout.
    ``DisconnectionError`` makes the pool discard the connection and check out another.
    """

    def on_checkout(_dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        driver = record.driver_connection
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the server closed this pooled connection")

    event.listen(engine.sync_engine.pool, "checkout", on_checkout)


# create_async_engine does no IO: connections open on first use.
engine = create_async_engine(get_settings().async_database_url, **engine_options(get_settings()))
refuse_closed_connections(engine)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


_held_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def nested_connection_slots() -> asyncio.Semaphore:
    """Limits work that holds a pooled connection while it needs a second one.

    A token refresh keeps its connection (row lock) while the in-process sandbox takes another
    for its grant; if every pooled connection were held that way, all would wait for each
    other until ``DASHTAM_DB_POOL_TIMEOUT``. A third of the pool may be held so; the rest
    stays free for everything else. One semaphore per event loop (asyncio primitives belong
    to one loop).
    """
    loop = asyncio.get_running_loop()
    slots = _held_slots.get(loop)
    if slots is None:
        settings = get_settings()
        size = max(1, (settings.pool_size + settings.pool_overflow) // 3)
        slots = _held_slots[loop] = asyncio.Semaphore(size)
    return slots


# A connection the server dropped, as SQLAlchemy reports it, and as asyncpg does where
# SQLAlchemy 2.0 lets its errors through unwrapped (a rollback on a connection a restart left
# mid-operation raises InternalClientError).
CONNECTION_LOST = (
    DBAPIError,
    OSError,
    TimeoutError,
    InternalClientError,
    OperatorInterventionError,
    PostgresConnectionError,
)


# connection_exception, operator_intervention (restart, admin shutdown), and the waits a
# retry can outlast: lock_not_available, deadlock_detected, serialization_failure.
_RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "57"})
_RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01", "40001"})


_LOST_DRIVER_ERRORS = (*CONNECTION_LOST, ConnectionDoesNotExistError)


def is_retryable(exc: BaseException) -> bool:
    """True when the same statements may succeed on a fresh connection a moment later.

    A refused write (a constraint, a trigger's exception, bad input) is not retryable: it would
    fail the same way again.
    """
    if isinstance(exc, DBAPIError):
        # The driver's own error, where SQLAlchemy's asyncpg adapter keeps it.
        cause = getattr(exc.orig, "__cause__", None)
        sqlstate = str(
            getattr(exc.orig, "sqlstate", None)
            or getattr(cause, "sqlstate", None)
            or getattr(exc.orig, "pgcode", "")
            or ""
        )
        return (
            exc.connection_invalidated
            or isinstance(exc, OperationalError | InterfaceError)
            or sqlstate[:2] in _RETRYABLE_SQLSTATE_CLASSES
            or sqlstate in _RETRYABLE_SQLSTATES
            or isinstance(cause, _LOST_DRIVER_ERRORS)
        )
    return isinstance(exc, _LOST_DRIVER_ERRORS)


async def get_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request."""
    session = SessionLocal()
    try:
        yield session
    finally:
        await close_quietly(session)


async def close_quietly(session: AsyncSession) -> None:
    """Close ``session``; when its connection died mid-request, discard that connection.

    By then the response is decided (often already sent): a failing rollback on a connection
    the server dropped must not turn it into a broken reply.
    """
    try:
        await session.close()
    except CONNECTION_LOST:
        with suppress(*CONNECTION_LOST):
            await session.invalidate()


# -- reads without a transaction ---------------------------------------------------------------

_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}
_autocommitting: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()


def _autocommitting_engine(engine: AsyncEngine) -> AsyncEngine:
    # Shares ``engine``'s pool; made once per engine (tests rebind to engines of their own).
    found = _autocommitting.get(engine)
    if found is None:
        found = _autocommitting[engine] = engine.execution_options(**_AUTOCOMMIT)
    return found


@asynccontextmanager
async def reading() -> AsyncIterator[AsyncConnection]:
    """A pooled connection whose statements autocommit, for Core reads; back to the pool after.

    No session: for a route that only reads, opening and closing one costs more CPU than its
    statements. The connection comes from where ``SessionLocal`` is bound, so a test that
    binds it to its own transaction's connection reads inside that transaction. Under READ
    COMMITTED every statement sees the latest commits whether or not it runs in a
    transaction, so for a request that only reads, BEGIN and ROLLBACK are two round trips that
    buy nothing. Statements that write do not belong here: they would autocommit one by one.
    """
    bind = SessionLocal.kw.get("bind")
    if isinstance(bind, AsyncConnection):
        yield bind
        return
    assert isinstance(bind, AsyncEngine), "SessionLocal is bound to an engine or a connection"
    connection = await _autocommitting_engine(bind).connect()
    try:
        yield connection
    finally:
        await _close_quietly(connection)


async def _close_quietly(connection: AsyncConnection) -> None:
    # As ``close_quietly``: a connection the server dropped is discarded, not pooled.
    try:
        await connection.close()
    except CONNECTION_LOST:
        with suppress(*CONNECTION_LOST):
            await connection.invalidate()


_CONNECTION = "dashtam.connection"


async def _connect_autocommitting(session: AsyncSession) -> AsyncConnection:
    # A session bound to one connection (a test's outer transaction) reads inside it instead:
    # that connection's transaction is not the session's to end.
    if isinstance(session.bind, AsyncEngine):
        connection = await session.connection(execution_options=_AUTOCOMMIT)
    else:
        connection = await session.connection()
    session.info[_CONNECTION] = connection
    return connection


async def connection_of(session: AsyncSession) -> AsyncConnection:
    """The connection ``session`` holds, for Core statements (no ORM entities to load).

    The one ``reading_briefly`` took is kept at hand: asking the session again costs a pass
    through its transaction machinery on every statement.
    """
    connection: AsyncConnection | None = session.info.get(_CONNECTION)
    if connection is None:
        connection = await session.connection()
    return connection


@asynccontextmanager
async def reading_briefly(session: AsyncSession) -> AsyncIterator[None]:
    """Run a few reads (authentication) outside a transaction, then hand the connection back.

    What the request does next starts a transaction of its own. Inside a transaction already
    begun, the reads simply join it.
    """
    if session.in_transaction():
        yield
        return
    await _connect_autocommitting(session)
    yield
    await session.commit()  # nothing was written: releases the connection, no round trip


def _forget_connection(session: Session, transaction: SessionTransaction) -> None:
    # The connection went back to the pool (or to the test's outer transaction) with it.
    if transaction.parent is None:
        session.info.pop(_CONNECTION, None)


event.listen(Session, "after_transaction_end", _forget_connection)
