"""Transaction isolation's connections: one per event loop, kept for the next test on it.

Tests that run one after another on the same event loop (pytest-asyncio's class, module,
package or session loop, anyio's runner while it lives, pgharness's loop thread for def tests)
share one asyncpg connection: per test only the outer transaction begins and rolls back. Each
test still gets a new SQLAlchemy ``Connection`` on it, so a session a test kept holds a closed
connection, never the next test's.

A connection never leaves the loop that opened it (``LoopPool`` hands out the idle connection
of the running loop only) and is closed when that loop shuts down: ``asyncio.Runner.close()``
(pytest-asyncio's and anyio's runners, and the loop thread of def tests) closes the loop's
async generators before the loop, and a sentinel generator per loop closes the connection
then, on its own loop. A loop that ends with its test (pytest-asyncio's default per-test loop)
keeps nothing: its connection is closed at the test's teardown, instead of rolling back (the
server rolls back what a closed session leaves). Closing sends PostgreSQL's Terminate message
and drops the socket without waiting for the server to end its backend, which costs more than
2 ms a test on per-test loops and tells the test nothing.

Between two tests on one loop, ``RESET_SQL`` clears what a test can leave on a session that its
rollback does not undo. It travels with the test's ``ROLLBACK`` (``HarnessConnection``), so
reuse costs no extra round trip. Everything else a test does runs inside its outer transaction,
and PostgreSQL undoes it with the rollback: ``SET`` and ``set_config``, ``LISTEN``, temporary
tables, cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy.pool import ConnectionPoolEntry, Pool

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

__all__ = [
    "RESET_SQL",
    "HarnessConnection",
    "LoopPool",
    "end_transaction",
    "reset_sync_session",
    "sync_driver_state_changed",
]

#: Clears what survives a rollback: session-level advisory locks, sequences' ``currval``, and
#: (for code that used the driver connection outside the transaction) cursors, ``LISTEN``,
#: settings, the role and temporary tables. Sent after ``ROLLBACK`` in the same message, it
#: costs the server some 10 microseconds. ``DISCARD ALL`` would also drop the prepared
#: statements of SQLAlchemy's statement cache, which then fail in the next test; statements a
#: test made with ``PREPARE`` are deallocated by name instead, when the guard (or
#: ``HarnessConnection``) saw one: listing them costs more than the rest of the reset.
RESET_SQL = (
    "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL; "
    "SET SESSION AUTHORIZATION DEFAULT; DISCARD SEQUENCES; DISCARD TEMP"
)
_PREPARED_NAMES = "SELECT name FROM pg_prepared_statements WHERE from_sql"
_SYNC_RESET_SQL = f"{RESET_SQL}; {_PREPARED_NAMES}"
# A PREPARE anywhere in what the test sent through the driver connection itself.
_PREPARE = re.compile(r"\bPREPARE\b", re.IGNORECASE)

# What a test can register on the driver's connection object itself (asyncpg's, psycopg's);
# kept, it would act in later tests (a listener's channel even stops asyncpg's add_listener
# from sending LISTEN again).
_DRIVER_CALLBACKS = (
    "_listeners",
    "_log_listeners",
    "_termination_listeners",
    "_query_loggers",
    "_notify_handlers",
)


_KEEP = "pgharness.keep"


class LoopPool(Pool):
    """A SQLAlchemy pool that keeps at most one idle connection per event loop.

    A connection returns to the pool's idle place for its loop only when ``keep`` marked it
    for the next test (and the loop has no idle connection yet); any other is closed.
    """

    _is_asyncio = True  # for create_async_engine

    def __init__(self, creator: Any, **kw: Any) -> None:
        super().__init__(creator, **kw)
        self._lock = threading.Lock()
        self._idle: dict[asyncio.AbstractEventLoop, ConnectionPoolEntry] = {}
        self._sentinels: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}

    def _do_get(self) -> ConnectionPoolEntry:
        loop = asyncio.get_running_loop()
        with self._lock:
            record = self._idle.pop(loop, None)
        return record if record is not None else self._create_connection()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        loop = asyncio._get_running_loop()
        keep = False
        if record.info.pop(_KEEP, False) and record.dbapi_connection is not None:
            with self._lock:
                # A loop that already has an idle connection needs no second.
                keep = loop in self._sentinels and self._idle.setdefault(loop, record) is record
        if not keep:
            _close(record)  # in SQLAlchemy's greenlet, on the connection's loop

    async def keep(self, connection: AsyncConnection) -> None:
        """Keep ``connection`` (on the running loop) for the loop's next test once it is
        closed, until the loop ends."""
        loop = asyncio.get_running_loop()
        with self._lock:
            watched = loop in self._sentinels
        if not watched:
            sentinel = self._close_when_loop_ends(loop)
            await sentinel.asend(None)  # its first step registers it with the loop
            with self._lock:
                self._sentinels[loop] = sentinel
        connection.info[_KEEP] = True

    async def _close_when_loop_ends(self, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            with self._lock:
                self._sentinels.pop(loop, None)
                record = self._idle.pop(loop, None)
            if record is not None:
                from sqlalchemy.util.concurrency import greenlet_spawn

                # A connection the server already dropped cannot close cleanly: it is forgotten.
                with contextlib.suppress(Exception):
                    await greenlet_spawn(_close, record)

    def dispose(self) -> None:
        """Nothing to do: an idle connection can only be closed on its own loop, and is, when
        that loop ends."""

    def recreate(self) -> LoopPool:
        return self.__class__(
            self._creator,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            pre_ping=self._pre_ping,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )

    def status(self) -> str:
        return f"LoopPool idle on {len(self._idle)} loop(s)"


def _close(record: ConnectionPoolEntry) -> None:
    """Close without waiting for the server to end the backend (see the module docstring)."""
    terminate = getattr(record.driver_connection, "terminate", None)
    if terminate is not None:
        terminate()  # asyncpg: Terminate sent, socket closed
    record.close()  # SQLAlchemy's bookkeeping; the driver's close() is then a no-op


def _driver_state_changed(driver: object) -> bool:
    """Whether the test registered callbacks on the driver's connection (listeners, loggers)."""
    return any(getattr(driver, name, None) for name in _DRIVER_CALLBACKS)


# asyncpg's own statement for ending a transaction it began (asyncpg.transaction.Transaction).
_ASYNCPG_ROLLBACK = "ROLLBACK;"


class HarnessConnection(asyncpg.Connection):  # type: ignore[misc]
    """asyncpg's connection, whose next ``ROLLBACK`` can end the test for good.

    SQLAlchemy ends the test's outer transaction through asyncpg, which sends ``ROLLBACK;``.
    Armed by ``end_transaction``, that message also carries the reset for the next test (one
    round trip for both), or is replaced by closing the connection. Unarmed, or should asyncpg
    ever word its rollback differently, it is an ordinary ``ROLLBACK``, and ``end_transaction``
    resets or closes with a statement of its own.
    """

    _pgharness_plan: str | None = None  # "reset" or "close"
    _pgharness_status: str | None = None
    _pgharness_prepared = False  # a PREPARE went through execute()

    async def execute(
        self,
        query: str,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109  (asyncpg's signature)
    ) -> str:
        plan, self._pgharness_plan = self._pgharness_plan, None
        if plan is None or args or query != _ASYNCPG_ROLLBACK:
            if _PREPARE.search(query):
                self._pgharness_prepared = True
            return str(await super().execute(query, *args, timeout=timeout))
        if plan == "close":
            self.terminate()  # the server rolls back as the session ends
            self._pgharness_status = "closed"
            return "ROLLBACK"
        self._pgharness_status = str(
            await super().execute(f"ROLLBACK; {RESET_SQL}", timeout=timeout)
        )
        return "ROLLBACK"


async def end_transaction(
    connection: AsyncConnection, outer: AsyncTransaction, *, keep: bool, prepared: bool
) -> bool:
    """Roll back the test's outer transaction and, with ``keep``, reset the connection for the
    next test on its loop; without, close it. ``prepared``: the test ran ``PREPARE``. True:
    the connection may serve the next test."""
    sync_connection = connection.sync_connection
    # No IO, so no need for get_raw_connection()'s trip through SQLAlchemy's greenlet.
    driver: Any = sync_connection.connection.driver_connection if sync_connection else None
    if not isinstance(driver, HarnessConnection):
        await outer.rollback()
        return False
    keep = keep and not _driver_state_changed(driver)
    driver._pgharness_plan, driver._pgharness_status = ("reset" if keep else "close"), None
    try:
        await outer.rollback()
    finally:
        status, driver._pgharness_plan = driver._pgharness_status, None
    if not keep or driver.is_closed() or driver.is_in_transaction():
        return False
    if status is None:  # the rollback did not carry the reset (no statement had begun it)
        await driver.execute(RESET_SQL)
    if prepared or driver._pgharness_prepared:
        driver._pgharness_prepared = False
        names = [row[0] for row in await driver.fetch(_PREPARED_NAMES)]
        if names:
            await driver.execute("; ".join(f"DEALLOCATE {quote_identifier(n)}" for n in names))
    return True


def reset_sync_session(connection: Connection) -> None:
    """Reset a rolled-back psycopg connection (plain ``sessionmaker`` apps) for the next test.

    A blocking connection belongs to no loop: the engine's ordinary pool keeps it. psycopg
    prepares few statements of its own, so listing those the test made is cheap here.
    """
    driver: Any = connection.connection.driver_connection
    driver.autocommit = True  # the script commits as it runs: no BEGIN, no COMMIT round trip
    try:
        cursor = driver.execute(_SYNC_RESET_SQL)
        while cursor.nextset():
            pass
        names = [row[0] for row in cursor.fetchall()]
        if names:
            driver.execute("; ".join(f"DEALLOCATE {quote_identifier(n)}" for n in names))
    finally:
        driver.autocommit = False


def sync_driver_state_changed(connection: Connection) -> bool:
    return _driver_state_changed(connection.connection.driver_connection)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
