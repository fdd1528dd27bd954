"""Per-test isolation: one connection and an outer transaction, or a whole database.

``transaction`` (default): the test gets one ``AsyncConnection`` on the loop it runs on, with
an outer transaction that is rolled back at teardown. The app's sessionmakers are rebound to it
with ``join_transaction_mode="create_savepoint"``: a ``commit()`` releases a savepoint, a
``rollback()`` returns to one, and nothing outlives the test. Consecutive tests on one loop
reuse its database connection, reset between them (``_connections.py``).

``database``: the test gets a database of its own from the warm pool, with no outer
transaction; the sessionmakers are rebound to an engine with a real pool on the test's loop.

Rebinding edits each sessionmaker's ``kw`` (where both ``async_sessionmaker`` and
``sessionmaker`` keep their options) and puts the original dict back at teardown, so the app's
own options (``expire_on_commit``, ``class_``, ``info``...) are kept: pgharness never invents
session options. An app whose sessionmakers are all plain (sync) ``sessionmaker`` gets the same
from one psycopg connection: its sessions, ``db`` and ``client`` share its outer transaction.
An app that configures both kinds runs every test in ``database`` isolation
(``required_mode``): two connections cannot share a transaction, and a row one of them holds
uncommitted would make the other wait forever.

The test's own sessions (``async_db``, ``db``) re-read rows their queries return
(``refresh_on_select``), so they see what the app committed in its sessions.

The test's connection carries a ``ConnectionGuard`` (``_guard.py``); the teardown names tasks
still using it. A connection whose state the teardown cannot vouch for (the outer transaction
gone, a statement cancelled mid-way, the driver connection changed, a failed reset) is closed
for real: the next test gets a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import ConfigurationError
from ._guard import ConnectionGuard, watch_engine

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Transaction
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, AsyncTransaction
    from sqlalchemy.orm import ORMExecuteState, Session

    from ._connections import LoopPool

__all__ = [
    "BOTH_KINDS_NOTE",
    "AppSessionmaker",
    "EngineCache",
    "IsolationMode",
    "Rebinding",
    "TestIsolation",
    "load_sessionmakers",
    "pg_isolation",
    "refresh_on_select",
    "required_mode",
]

JOIN_MODE = "create_savepoint"


class IsolationMode(enum.Enum):
    TRANSACTION = "transaction"
    DATABASE = "database"


def pg_isolation(mode: str = "transaction") -> IsolationMode:
    """The ``pg_isolation`` marker's signature: ``@pytest.mark.pg_isolation("database")``."""
    try:
        return IsolationMode(mode)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in IsolationMode)
        raise ConfigurationError(
            f"@pytest.mark.pg_isolation({mode!r}): unknown isolation; use one of {valid} "
            "(default 'transaction')."
        ) from None


# -- the app's sessionmakers ------------------------------------------------------------------


@dataclass(frozen=True)
class AppSessionmaker:
    """A sessionmaker named in ``pgharness_sessionmakers``."""

    name: str
    maker: Any  # sessionmaker | async_sessionmaker
    is_async: bool


#: Why a run whose app configures both kinds of sessionmaker puts every test in its own database.
BOTH_KINDS_NOTE = (
    "pgharness_sessionmakers names both async and plain (sync) sessionmakers: an asyncpg and a "
    "psycopg connection cannot share one transaction, so every test runs in database "
    "isolation (a database of its own, real commits, dropped afterwards)"
)


def required_mode(makers: Sequence[AppSessionmaker]) -> IsolationMode | None:
    """The isolation the sessionmakers' kinds impose on every test (None: the test's choice)."""
    kinds = {maker.is_async for maker in makers}
    return IsolationMode.DATABASE if kinds == {True, False} else None


def refresh_on_select(session: Session) -> None:
    """Make ``session``'s queries return what the database holds, as a fresh session's would.

    The test's own sessions keep the objects they loaded in their identity map; after the app
    changed and committed those rows in a session of its own, a plain re-select would hand back
    the test's stale objects. ``populate_existing`` refreshes them from the rows the query read.
    """
    from sqlalchemy import event

    event.listen(session, "do_orm_execute", _populate_existing)


def _populate_existing(state: ORMExecuteState) -> None:
    if state.is_select and not (state.is_column_load or state.is_relationship_load):
        state.update_execution_options(populate_existing=True)


def load_sessionmakers(
    named: Sequence[tuple[str, Callable[[], object]]],
) -> tuple[AppSessionmaker, ...]:
    """Import and type-check the sessionmakers; ``named`` is ``(name, loader)`` pairs."""
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    from sqlalchemy.orm import sessionmaker

    found: list[AppSessionmaker] = []
    for name, load in named:
        obj = load()
        if isinstance(obj, async_sessionmaker):
            found.append(AppSessionmaker(name, obj, is_async=True))
        elif isinstance(obj, sessionmaker):
            found.append(AppSessionmaker(name, obj, is_async=issubclass(obj.class_, AsyncSession)))
        else:
            raise ConfigurationError(
                f"pgharness_sessionmakers names {name!r}, which is a {type(obj).__module__}."
                f"{type(obj).__qualname__}, not an async_sessionmaker or sessionmaker. Fix: name "
                "the factory your app calls for sessions, e.g. SessionLocal = "
                "async_sessionmaker(engine, expire_on_commit=False)."
            )
    return tuple(found)


@dataclass
class Rebinding:
    """Temporarily point sessionmakers at the test's connection (or engine)."""

    saved: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)

    def bind(self, maker: Any, target: object, *, join: bool) -> None:
        original: dict[str, Any] = maker.kw
        rebound = dict(original)
        rebound.pop("binds", None)
        rebound["bind"] = target
        if join:
            rebound["join_transaction_mode"] = JOIN_MODE
        self.saved.append((maker, original))
        maker.kw = rebound

    def restore(self) -> None:
        while self.saved:
            maker, original = self.saved.pop()
            maker.kw = original


# -- engines ----------------------------------------------------------------------------------


class EngineCache:
    """Engines for ``transaction`` isolation, one per database, shared by every loop.

    The async engine's pool (``LoopPool``) keeps one connection per event loop, so no
    connection ever crosses loops, whatever the loop scopes, and tests on one loop reuse it.
    The psycopg engine (for plain ``sessionmaker``) is an ordinary pool: a blocking connection
    belongs to no loop.
    """

    def __init__(self) -> None:
        self._async: dict[str, AsyncEngine] = {}
        self._sync: dict[str, Engine] = {}

    def async_engine(self, url: str) -> AsyncEngine:
        engine = self._async.get(url)
        if engine is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            from ._connections import HarnessConnection, LoopPool

            engine = self._async[url] = create_async_engine(
                url, poolclass=LoopPool, connect_args={"connection_class": HarnessConnection}
            )
            watch_engine(engine.sync_engine)
        return engine

    def sync_engine(self, url: str) -> Engine:
        engine = self._sync.get(url)
        if engine is None:
            from sqlalchemy import create_engine

            engine = self._sync[url] = create_engine(url, pool_size=2)
        return engine

    def dispose(self) -> None:
        for engine in self._sync.values():
            engine.dispose()
        for async_engine in self._async.values():
            # A connection still idle belongs to a loop that has not ended yet: it is closed
            # when that loop ends, on that loop (LoopPool).
            async_engine.sync_engine.dispose(close=False)
        self._sync.clear()
        self._async.clear()


# -- one test's isolation ---------------------------------------------------------------------


@dataclass
class TestIsolation:
    """The database side of one test. ``start``/``stop`` run on the test's loop."""

    __test__ = False  # not a pytest test class

    mode: IsolationMode
    url: str
    sync_url: str
    makers: tuple[AppSessionmaker, ...]
    engines: EngineCache
    loop_label: str
    nodeid: str
    #: The test's loop may run further tests: its connection is kept for them.
    reuse: bool = False
    connection: AsyncConnection | None = None
    engine: AsyncEngine | None = None
    guard: ConnectionGuard | None = None
    _outer: AsyncTransaction | None = None
    _sync_engine: Engine | None = None
    _sync_connection: Connection | None = None
    _sync_outer: Transaction | None = None
    _rebinding: Rebinding = field(default_factory=Rebinding)

    @property
    def has_sync_makers(self) -> bool:
        return any(not m.is_async for m in self.makers)

    @property
    def sync_only(self) -> bool:
        """The app's sessionmakers are all plain ``sessionmaker``: its tests share one psycopg
        connection and transaction (``db`` is a ``Session`` on it), and no asyncpg one."""
        return self.has_sync_makers and all(not m.is_async for m in self.makers)

    # Plain sessionmakers use a blocking driver: set up from the fixture's thread, never
    # inside an event loop.
    def start_sync(self) -> None:
        if not self.has_sync_makers:
            return
        if self.mode is IsolationMode.TRANSACTION:
            self._sync_connection = self.engines.sync_engine(self.sync_url).connect()
            self._sync_outer = self._sync_connection.begin()
        else:
            from sqlalchemy import create_engine

            self._sync_engine = create_engine(self.sync_url)

    def stop_sync(self) -> None:
        connection = self._sync_connection
        try:
            if connection is not None:
                _end_sync_connection(connection, self._sync_outer)
        finally:
            if connection is not None:
                connection.close()  # back to the pool, for the next test
            if self._sync_engine is not None:
                self._sync_engine.dispose()
            self._sync_connection = self._sync_outer = self._sync_engine = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transaction = self.mode is IsolationMode.TRANSACTION
        self.guard = ConnectionGuard(
            loop, self.loop_label, self.nodeid, outer_transaction=transaction
        )
        async_bind: object = None
        if transaction and self.sync_only:
            pass  # nothing async to bind: the psycopg connection of start_sync serves all
        elif transaction:
            self.connection = await self.engines.async_engine(self.url).connect()
            self.guard.attach(self.connection.sync_connection)
            self._outer = await self.connection.begin()
            async_bind = self.connection
        else:
            from sqlalchemy import event
            from sqlalchemy.ext.asyncio import create_async_engine

            self.engine = create_async_engine(self.url)
            event.listen(
                self.engine.sync_engine,
                "before_cursor_execute",
                self.guard._before_cursor_execute,
                retval=True,
            )
            async_bind = self.engine
        sync_bind = self._sync_connection if transaction else self._sync_engine
        for app_maker in self.makers:
            bind = async_bind if app_maker.is_async else sync_bind
            self._rebinding.bind(app_maker.maker, bind, join=transaction)

    def new_session(self) -> AsyncSession:
        """A session as the app's first async sessionmaker makes it, or a plain one."""
        session = self._new_async_session()
        refresh_on_select(session.sync_session)
        return session

    def _new_async_session(self) -> AsyncSession:
        for app_maker in self.makers:
            if app_maker.is_async:
                session: AsyncSession = app_maker.maker()
                return session
        if self.sync_only:
            names = ", ".join(m.name for m in self.makers)
            raise ConfigurationError(
                f"async_db makes an AsyncSession, but pgharness_sessionmakers names only plain "
                f"sessionmakers ({names}): an AsyncSession cannot join their psycopg "
                "transaction. Fix: use db (a Session from your sessionmaker, inside the "
                "test's transaction) and client, in def tests."
            )
        from sqlalchemy.ext.asyncio import AsyncSession

        if self.mode is IsolationMode.TRANSACTION:
            return AsyncSession(bind=self.connection, join_transaction_mode=JOIN_MODE)
        return AsyncSession(bind=self.engine)

    def new_sync_session(self) -> Session:
        """A ``Session`` as the app's first plain sessionmaker makes it (``sync_only`` apps)."""
        maker = next(m.maker for m in self.makers if not m.is_async)
        session: Session = maker()
        refresh_on_select(session)
        return session

    async def stop(self) -> list[str]:
        """Undo everything; return what went wrong, in words for the failure report."""
        self._rebinding.restore()
        problems: list[str] = []
        guard = self.guard
        if guard is not None:
            leftovers = guard.leftover_tasks()
            # After a ConcurrentUseError the other task is often still running (gather does
            # not wait for it): the test's failure already says why, so it is only cancelled.
            if leftovers and not guard.concurrent_use:
                names = ", ".join(t.get_name() for t in leftovers)
                problems.append(
                    f"{len(leftovers)} task(s) ({names}) still running on the test's database "
                    "connection when the test ended; they were cancelled. Fix: await every task "
                    "that uses the database before the test returns (asyncio.gather, a TaskGroup, "
                    "or BackgroundTasks, which finish before the response)."
                )
            for task in leftovers:
                task.cancel()
            if leftovers:
                await asyncio.wait(leftovers, timeout=10)
            guard.closing = True
        if self.connection is not None:
            await self._close_connection()
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None
        return problems

    async def _close_connection(self) -> None:
        """Roll the test back; keep the connection for the loop's next test, or close it."""
        connection = self.connection
        assert connection is not None
        self.connection = None
        try:
            if self._outer is not None and self._outer.is_active and not connection.invalidated:
                from ._connections import end_transaction

                prepared = self.guard is not None and self.guard.prepared
                keep = self.reuse
                if await end_transaction(connection, self._outer, keep=keep, prepared=prepared):
                    await _loop_pool(connection).keep(connection)
            elif not connection.invalidated:
                # The outer transaction is no longer ours to roll back: closing the
                # connection for real makes the server discard whatever is open.
                await connection.invalidate()
        except Exception:
            with contextlib.suppress(Exception):
                await connection.invalidate()
        finally:
            if self.guard is not None:
                self.guard.detach(connection.sync_connection)
            await connection.close()  # kept for the loop's next test, or closed


def _loop_pool(connection: AsyncConnection) -> LoopPool:
    from ._connections import LoopPool

    pool = connection.sync_engine.pool
    assert isinstance(pool, LoopPool)
    return pool


def _end_sync_connection(connection: Connection, outer: Transaction | None) -> None:
    """Roll back and reset the test's psycopg connection, or invalidate it if that fails."""
    from ._connections import reset_sync_session, sync_driver_state_changed

    try:
        if outer is None or not outer.is_active or connection.invalidated:
            raise _NotReusable
        outer.rollback()
        if sync_driver_state_changed(connection):
            raise _NotReusable
        reset_sync_session(connection)
    except Exception:
        # The pool then opens a new connection for the next test.
        with contextlib.suppress(Exception):
            connection.invalidate()


class _NotReusable(Exception):
    """The test's connection must not serve another test."""
