"""The guard on a test's database connection: fail the test that would break its isolation.

``ConnectionGuard`` sees every statement on the test's connection and stops, before the driver
sees it: committing or ending the outer transaction, use of the connection from another event
loop, and two sessions using it at once. Each error says what happened and the fix, and leaves
the connection usable. It also remembers the tasks that used the connection, so the teardown
can name those still running.

The listeners are put on the engine once (``watch_engine``) and find the guard of the
connection at hand (``ConnectionGuard.attach``): listening on each test's connection would
cost more than the rest of the guard's work together.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import ConcurrentUseError, CrossLoopError, IsolationError
from ._loops import HARNESS_LOOP_LABEL

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

__all__ = ["ConnectionGuard", "first_line", "watch_engine"]

# Statements that would end the outer transaction behind SQLAlchemy's back; and PREPARE, whose
# statement outlives the rollback (the teardown deallocates it).
_ENDS_TRANSACTION = re.compile(
    r"^\s*(?:(?P<ends>COMMIT|END|ABORT|ROLLBACK(?!\s+(?:WORK\s+|TRANSACTION\s+)?TO\b)"
    r"|PREPARE\s+TRANSACTION)|(?P<prepare>PREPARE))\b",
    re.IGNORECASE,
)
# Savepoint statements, to follow which task holds which savepoint on the test's connection.
_SAVEPOINT = re.compile(
    r"^\s*(?P<verb>SAVEPOINT|RELEASE(?:\s+SAVEPOINT)?|ROLLBACK\s+(?:WORK\s+|TRANSACTION\s+)?TO"
    r"(?:\s+SAVEPOINT)?)\s+(?P<name>\"[^\"]+\"|[\w$]+)",
    re.IGNORECASE,
)


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
    prepared: bool = False  # the test ran PREPARE: a statement that outlives its transaction

    def attach(self, connection: Connection | None) -> None:
        """Guard ``connection`` (of an engine given to ``watch_engine``) until ``detach``."""
        if connection is not None:
            _ATTACHED[connection] = self

    def detach(self, connection: Connection | None) -> None:
        if connection is not None and _ATTACHED.get(connection) is self:
            del _ATTACHED[connection]

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
        if asyncio._get_running_loop() is not self.loop:  # the message only when it is needed
            self.check_loop(f"run {first_line(statement)!r}")
        control = _ENDS_TRANSACTION.match(statement)
        if control is not None and control["prepare"]:
            self.prepared = True
        elif control is not None and self.outer_transaction and not self.closing:
            raise IsolationError(
                f"{self.nodeid}: {first_line(statement)!r} would end the test's outer "
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
                f"{self.nodeid}: {first_line(statement)!r} was sent on the test's database "
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
                f"{self.nodeid}: {first_line(statement)!r} from {_task_name(task)} refers to "
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
            ended_by = f"{first_line(statement)!r} from {_task_name(task)}"
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


# The guarded connections of every watched engine: a test's ``Connection`` -> its guard.
_ATTACHED: dict[Any, ConnectionGuard] = {}


def watch_engine(engine: Engine) -> None:
    """Route the statements, commits and rollbacks of ``engine``'s connections to their guards."""
    from sqlalchemy import event

    event.listen(engine, "before_cursor_execute", _route_statement, retval=True)
    event.listen(engine, "commit", _route_commit)
    event.listen(engine, "rollback", _route_rollback)


def _route_statement(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    guard = _ATTACHED.get(conn)
    if guard is None:
        return statement, parameters
    return guard._before_cursor_execute(conn, cursor, statement, parameters, context, executemany)


def _route_commit(conn: Any) -> None:
    guard = _ATTACHED.get(conn)
    if guard is not None:
        guard._on_commit(conn)


def _route_rollback(conn: Any) -> None:
    guard = _ATTACHED.get(conn)
    if guard is not None:
        guard._on_rollback(conn)


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


def first_line(statement: str) -> str:
    line = statement.strip().splitlines()[0] if statement.strip() else statement
    return line if len(line) <= 80 else line[:77] + "..."
