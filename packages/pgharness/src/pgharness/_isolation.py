"""Per-test isolation: one connection and an outer transaction, or a whole database.

``transaction`` (default): the test gets one ``AsyncConnection`` opened on the loop it runs on,
with an outer transaction that is rolled back at teardown. The app's sessionmakers are rebound
to it with ``join_transaction_mode="create_savepoint"``: a ``commit()`` releases a savepoint, a
``rollback()`` returns to one, and nothing outlives the test.

``database``: the test gets a database of its own from the warm pool, with no outer
transaction; the sessionmakers are rebound to an engine with a real pool on the test's loop.

Rebinding edits each sessionmaker's ``kw`` (where both ``async_sessionmaker`` and
``sessionmaker`` keep their options) and puts the original dict back at teardown, so the app's
own options (``expire_on_commit``, ``class_``, ``info``...) are kept: pgharness never invents
session options. A plain (sync) ``sessionmaker`` gets its own psycopg connection with its own
outer transaction on the same database: a separate transaction from the async one.

Guards fail the test that breaks isolation: committing or ending the outer transaction, a task
still using the connection at teardown, use of the connection from another event loop, and
two sessions using it at once (each caught before the driver sees the statement, so the
connection stays usable).
"""

from __future__ import annotations

import asyncio
import enum
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import ConcurrentUseError, ConfigurationError, CrossLoopError, IsolationError
from ._loops import HARNESS_LOOP_LABEL

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Transaction
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, AsyncTransaction

__all__ = [
    "AppSessionmaker",
    "EngineCache",
    "IsolationMode",
    "Rebinding",
    "TestIsolation",
    "load_sessionmakers",
    "pg_isolation",
]

JOIN_MODE = "create_savepoint"

# Statements that would end the outer transaction behind SQLAlchemy's back.
_ENDS_TRANSACTION = re.compile(
    r"^\s*(COMMIT|END|ABORT|ROLLBACK(?!\s+(WORK\s+|TRANSACTION\s+)?TO\b)|PREPARE\s+TRANSACTION)\b",
    re.IGNORECASE,
)
# Savepoint statements, to follow which task holds which savepoint on the test's connection.
_SAVEPOINT = re.compile(
    r"^\s*(?P<verb>SAVEPOINT|RELEASE(?:\s+SAVEPOINT)?|ROLLBACK\s+(?:WORK\s+|TRANSACTION\s+)?TO"
    r"(?:\s+SAVEPOINT)?)\s+(?P<name>\"[^\"]+\"|[\w$]+)",
    re.IGNORECASE,
)


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

    The async engine uses ``NullPool``: a connection is opened on the loop of the test that
    asks and closed at its teardown, so no connection ever crosses loops, whatever the loop
    scopes. The psycopg engine (for plain ``sessionmaker``) is an ordinary pool.
    """

    def __init__(self) -> None:
        self._async: dict[str, AsyncEngine] = {}
        self._sync: dict[str, Engine] = {}

    def async_engine(self, url: str) -> AsyncEngine:
        engine = self._async.get(url)
        if engine is None:
            from sqlalchemy.ext.asyncio import create_async_engine
            from sqlalchemy.pool import NullPool

            engine = self._async[url] = create_async_engine(url, poolclass=NullPool)
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
            async_engine.sync_engine.dispose(close=False)  # NullPool: nothing is open
        self._sync.clear()
        self._async.clear()


# -- guards -----------------------------------------------------------------------------------

_ASYNC_TEST_FIX = (
    "Fix: run this code on the test's loop: give async fixtures that use the database the "
    "same loop as the test (@pytest_asyncio.fixture(loop_scope=...) matching "
    "@pytest.mark.asyncio(loop_scope=...), or set asyncio_default_fixture_loop_scope and "
    "asyncio_default_test_loop_scope to the same scope), and do not use asyncio.run() or a "
    "thread's own loop inside a test."
)
_CONCURRENT_USE_FIX = (
    "In transaction isolation (the default) everything in a test shares one database "
    "connection, which serves one operation at a time, and each session on it works inside a "
    "savepoint of its own: sessions used at the same time (two requests at once, "
    "asyncio.gather or create_task over code that opens sessions) interleave their savepoints "
    "and undo each other's work. The statement was not sent. Fix: await the calls one after "
    "another, or give the test a database of its own with a real pool, where each concurrent "
    'session gets its own connection: @pytest.mark.pg_isolation("database").'
)
_MIDDLEWARE_HINT = (
    " Here the other task is the one Starlette's BaseHTTPMiddleware runs the endpoint in: a "
    "session the middleware keeps open across call_next() ends while the endpoint's "
    "dependency sessions, which close after the response, are still open."
)
_SYNC_TEST_FIX = (
    "Fix: in a def test, reach the app through the client fixture and the database through "
    "db (both run on pgharness's loop); instead of asyncio.run(coroutine), make the test "
    "async def and await it."
)


@dataclass
class ConnectionGuard:
    """Checks every statement on the test's connection; see the module docstring."""

    loop: asyncio.AbstractEventLoop
    loop_label: str
    nodeid: str
    outer_transaction: bool
    closing: bool = False
    tasks: weakref.WeakSet[asyncio.Task[Any]] = field(default_factory=weakref.WeakSet)
    breaches: list[str] = field(default_factory=list)
    # Open savepoints on the test's connection, innermost last, with the task that began each;
    # and those ended from under their session by another's, with how.
    savepoints: list[tuple[str, asyncio.Task[Any] | None]] = field(default_factory=list)
    ended_savepoints: dict[str, tuple[str, str]] = field(default_factory=dict)  # (began, ended)
    concurrent_use: bool = False  # a ConcurrentUseError was raised: it already explains

    def install(self, connection: Connection) -> None:
        from sqlalchemy import event

        event.listen(connection, "before_cursor_execute", self._before_cursor_execute, retval=True)
        event.listen(connection, "commit", self._on_commit)
        event.listen(connection, "rollback", self._on_rollback)

    def check_loop(self, doing: str) -> None:
        # Not get_running_loop(): its RuntimeError would be chained to our MissingGreenlet
        # and shown above it in the report.
        running = asyncio._get_running_loop()
        if running is None:
            # Sync code outside any loop: a lazy load read from a def test, say. The app
            # would get MissingGreenlet for the same code, so the test gets it too.
            _raise_missing_greenlet(doing)
            return
        if running is self.loop:
            return
        where = f"another event loop ({running!r})"
        raise CrossLoopError(
            f"{self.nodeid}: tried to {doing} on the test's database connection from {where}; "
            f"the connection belongs to the {self.loop_label}. asyncpg connections cannot move "
            "between loops (this is 'attached to a different loop' / 'another operation is in "
            "progress'). The statement was not sent and the connection is still usable. "
            + (_SYNC_TEST_FIX if self.loop_label == HARNESS_LOOP_LABEL else _ASYNC_TEST_FIX)
        )

    def _before_cursor_execute(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> tuple[str, Any]:
        self.check_loop(f"run {_first_line(statement)!r}")
        if self.outer_transaction and not self.closing and _ENDS_TRANSACTION.match(statement):
            raise IsolationError(
                f"{self.nodeid}: {_first_line(statement)!r} would end the test's outer "
                "transaction, and everything after it would be committed for real. It was not "
                "sent. Fix: call commit()/rollback() on a session (pgharness turns them into "
                "savepoint operations) instead of executing transaction control SQL; a test that "
                'needs real commits can use @pytest.mark.pg_isolation("database").'
            )
        task = asyncio.current_task()
        if self.outer_transaction and not self.closing:
            self._check_concurrent_use(cursor, statement, task)
        if task is not None:
            self.tasks.add(task)
        return statement, parameters

    def _check_concurrent_use(
        self, cursor: Any, statement: str, task: asyncio.Task[Any] | None
    ) -> None:
        """Two sessions at once on the one connection: say so instead of a driver error.

        Another task merely touching the connection is no proof (Starlette's
        BaseHTTPMiddleware runs a request's app in a child task while the parent waits, and
        SQLAlchemy closes sessions in a task of their own), so only two statements in flight
        at once count, or a session ending a savepoint that another's statement already ended
        (the server would answer 'savepoint ... does not exist').
        """
        if _statement_in_flight(cursor):
            self.concurrent_use = True
            raise ConcurrentUseError(
                f"{self.nodeid}: {_first_line(statement)!r} was sent on the test's database "
                f"connection by {_task_name(task)} while another task's statement was still "
                f"running on it. {_CONCURRENT_USE_FIX}"
            )
        savepoint = _SAVEPOINT.match(statement)
        if savepoint is None:
            return
        name = savepoint["name"].strip('"')
        if savepoint["verb"].upper() == "SAVEPOINT":
            self.savepoints.append((name, task))
            if self.ended_savepoints:
                self.ended_savepoints.pop(name, None)
            return
        ended = self.ended_savepoints.get(name)
        if ended is not None:
            began_by, ended_by = ended
            self.concurrent_use = True
            raise ConcurrentUseError(
                f"{self.nodeid}: {_first_line(statement)!r} from {_task_name(task)} refers to "
                f"savepoint {name}, which {began_by} began and {ended_by} already ended (ending "
                "a savepoint ends every one begun after it): two sessions worked on the test's "
                f"database connection at the same time. {_CONCURRENT_USE_FIX}"
                + (_MIDDLEWARE_HINT if "BaseHTTPMiddleware" in began_by + ended_by else "")
            )
        for depth in range(len(self.savepoints) - 1, -1, -1):
            if self.savepoints[depth][0] == name:
                break
        else:
            return  # not one we saw begin
        for inner, owner in self.savepoints[depth + 1 :]:
            ended_by = f"{_first_line(statement)!r} from {_task_name(task)}"
            self.ended_savepoints[inner] = (_task_name(owner), ended_by)
        del self.savepoints[depth:]

    def _on_commit(self, conn: Any) -> None:
        self.check_loop("commit")
        if self.outer_transaction and not self.closing:
            self.breaches.append("the test's connection was committed")
            raise IsolationError(
                f"{self.nodeid}: commit() was called on the test's connection itself, which "
                "would make the test's writes permanent. It was not committed. Fix: commit the "
                "session (session.commit() releases a savepoint inside the test's transaction), "
                "not the connection; a test that needs real commits can use "
                '@pytest.mark.pg_isolation("database").'
            )

    def _on_rollback(self, conn: Any) -> None:
        self.check_loop("roll back")
        if self.outer_transaction and not self.closing:
            self.breaches.append("the test's connection was rolled back")
            raise IsolationError(
                f"{self.nodeid}: rollback() was called on the test's connection itself, which "
                "would end the test's outer transaction. Fix: roll back the session "
                "(session.rollback() returns to a savepoint), not the connection."
            )

    def leftover_tasks(self) -> list[asyncio.Task[Any]]:
        current = asyncio.current_task()
        return [t for t in self.tasks if not t.done() and t is not current]


def _raise_missing_greenlet(doing: str) -> None:
    from sqlalchemy.exc import MissingGreenlet
    from sqlalchemy.util.concurrency import in_greenlet

    if not in_greenlet():
        raise MissingGreenlet(
            f"greenlet_spawn has not been called; can't {doing} here: this is implicit IO "
            "(a lazy load or an expired attribute) outside the event loop, which fails in the "
            "async app too. Fix: load it in the query (selectinload / joinedload), declare the "
            'relationship lazy="selectin" or lazy="raise", or refresh it first: '
            'db.refresh(obj, ["relationship"]).'
        )


def _statement_in_flight(cursor: Any) -> bool:
    """Whether another statement holds the asyncpg adapter's per-connection lock right now."""
    adapted = getattr(cursor, "_adapt_connection", None)
    locked = getattr(getattr(adapted, "_execute_mutex", None), "locked", None)
    return locked is not None and bool(locked())


def _task_name(task: asyncio.Task[Any] | None) -> str:
    return f"task {task.get_name()!r}" if task is not None else "code outside any task"


def _first_line(statement: str) -> str:
    line = statement.strip().splitlines()[0] if statement.strip() else statement
    return line if len(line) <= 80 else line[:77] + "..."


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
        try:
            if self._sync_outer is not None and self._sync_outer.is_active:
                self._sync_outer.rollback()
        finally:
            if self._sync_connection is not None:
                self._sync_connection.close()
            if self._sync_engine is not None:
                self._sync_engine.dispose()
            self._sync_connection = self._sync_outer = self._sync_engine = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transaction = self.mode is IsolationMode.TRANSACTION
        self.guard = ConnectionGuard(
            loop, self.loop_label, self.nodeid, outer_transaction=transaction
        )
        async_bind: object
        if transaction:
            self.connection = await self.engines.async_engine(self.url).connect()
            self.guard.install(self.connection.sync_connection)  # type: ignore[arg-type]
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
        for app_maker in self.makers:
            if app_maker.is_async:
                session: AsyncSession = app_maker.maker()
                return session
        from sqlalchemy.ext.asyncio import AsyncSession

        if self.mode is IsolationMode.TRANSACTION:
            return AsyncSession(bind=self.connection, join_transaction_mode=JOIN_MODE)
        return AsyncSession(bind=self.engine)

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
        connection = self.connection
        assert connection is not None
        self.connection = None
        try:
            if self._outer is not None and self._outer.is_active:
                await self._outer.rollback()
            else:
                # The outer transaction is no longer ours to roll back: closing the
                # connection for real makes the server discard whatever is open.
                await connection.invalidate()
        except Exception:
            await connection.invalidate()
        finally:
            await connection.close()
