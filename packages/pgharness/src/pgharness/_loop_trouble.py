"""Explaining event-loop trouble: a connection used on a loop other than its own, or by two
tasks at once.

asyncpg connections belong to the event loop that opened them. pytest-asyncio (>= 1.0)
runs each test on a loop of the test's loop scope (``function`` by default) and each async
fixture on a loop of the fixture's loop scope, and ignores a custom ``event_loop`` fixture.
A pooled engine, a session-scoped fixture or a session kept across tests therefore hands a
test a connection from another (often already closed) loop.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
import types
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeGuard

import pytest

from ._activation import isolation_mode_of, wants_isolation
from ._errors import ConfigurationError
from ._isolation import IsolationMode
from ._loops import (
    ANYIO,
    PYTEST_ASYNCIO,
    LoopChoice,
    asyncio_mode,
    loop_of_fixture,
    loop_of_test,
)
from ._tracebacks import (
    Frame,
    frames_of,
    is_instance,
    is_library_frame,
    library_attribute,
    message_of,
    raised_by,
    user_frame,
)

__all__ = [
    "LoopTrouble",
    "classify_loop_trouble",
    "explain_loop_trouble",
    "name_fixtures_on_other_loops",
]


class LoopTrouble(Enum):
    OTHER_LOOP = "other loop"
    CLOSED_LOOP = "closed loop"
    BUSY_CONNECTION = "busy connection"
    CONCURRENT_SESSION = "concurrent session"
    LOST_SAVEPOINT = "lost savepoint"


# The driver's and SQLAlchemy's errors (SQLAlchemy wraps asyncpg's); asyncio's own are
# RuntimeErrors.
_DATABASE_PACKAGES = frozenset({"asyncpg", "sqlalchemy"})
_SQLALCHEMY = frozenset({"sqlalchemy"})
_ASYNCPG = frozenset({"asyncpg"})
_LOST_SAVEPOINT = re.compile(r'savepoint "[^"]*" does not exist')


def classify_loop_trouble(exc: BaseException) -> LoopTrouble | None:
    if not (isinstance(exc, RuntimeError) or raised_by(exc, _DATABASE_PACKAGES)):
        return None  # a test's own failure that merely quotes one of these texts
    message = message_of(exc)
    if _LOST_SAVEPOINT.search(message) and raised_by(exc, _DATABASE_PACKAGES):
        return LoopTrouble.LOST_SAVEPOINT
    if "attached to a different loop" in message:
        return LoopTrouble.OTHER_LOOP
    if "another operation is in progress" in message:
        return LoopTrouble.BUSY_CONNECTION
    if "concurrent operations are not permitted" in message or (
        type(exc).__name__ == "IllegalStateChangeError" and "already in progress" in message
    ):
        return LoopTrouble.CONCURRENT_SESSION
    if isinstance(exc, RuntimeError) and "Event loop is closed" in message:
        frames = frames_of(exc.__traceback__)
        if any(frame.module.split(".", 1)[0] in {"sqlalchemy", "asyncpg"} for frame in frames):
            return LoopTrouble.CLOSED_LOOP
    return None


@dataclass(frozen=True)
class _OtherLoopFixture:
    """An async fixture of the test that runs on another loop than the test."""

    name: str
    scope: str  # the fixture's own scope
    loop: LoopChoice


@dataclass(frozen=True)
class _Scopes:
    test: LoopChoice | None
    other_loop_fixtures: list[_OtherLoopFixture]
    ignored_event_loop: str | None

    @property
    def test_loop_scope(self) -> str | None:
        """pytest-asyncio's loop scope of the test (``None``: anyio or no plugin runs it)."""
        return self.test.scope if self.test is not None else None

    @property
    def other_scopes(self) -> list[str]:
        """The loop scopes of the fixtures pytest-asyncio runs on another of its loops."""
        return sorted(
            {
                fixture.loop.scope
                for fixture in self.other_loop_fixtures
                if fixture.loop.runner == PYTEST_ASYNCIO and fixture.loop.scope is not None
            }
        )

    @property
    def other_runners(self) -> list[_OtherLoopFixture]:
        """The fixtures another plugin than the test's runs (anyio vs pytest-asyncio)."""
        test_runner = self.test.runner if self.test is not None else None
        return [f for f in self.other_loop_fixtures if f.loop.runner != test_runner]


def explain_loop_trouble(
    exc: BaseException, trouble: LoopTrouble, item: pytest.Item, rootdir: Path | None
) -> str:
    frames = frames_of(exc.__traceback__)
    engine = _engine_description(frames)
    driver_loop = _driver_connection_loop(frames)
    user = user_frame(frames)
    if trouble is LoopTrouble.LOST_SAVEPOINT:
        return _explain_lost_savepoint(item, user, rootdir)
    scopes = _scopes(item)
    busy = trouble is LoopTrouble.BUSY_CONNECTION
    if busy and driver_loop is not None and driver_loop.is_closed():
        trouble = LoopTrouble.CLOSED_LOOP
    elif busy and _busy_from_another_loop(frames, driver_loop, scopes, rootdir):
        trouble = LoopTrouble.OTHER_LOOP
    if trouble in {LoopTrouble.CONCURRENT_SESSION, LoopTrouble.BUSY_CONNECTION}:
        state_change = type(exc).__name__ == "IllegalStateChangeError"
        return _explain_concurrency(
            trouble, frames, user, engine, driver_loop, rootdir, state_change
        )

    lines = [
        "This test used a database connection that was opened on another event loop."
        if trouble is LoopTrouble.OTHER_LOOP
        else "This test used a database connection whose event loop is already closed"
        " (it was opened on another loop, by an earlier test or a wider-scoped fixture).",
        "asyncpg connections belong to the loop that opened them; " + _runs_on(scopes.test),
    ]
    if busy:
        lines.append(
            "asyncpg reports 'another operation is in progress' because an earlier operation on"
            " this connection was cut off on its own loop and never finished"
            + (
                "; that loop is still open, so this is not two operations at once."
                if trouble is LoopTrouble.OTHER_LOOP
                else "."
            )
        )
    if user is not None:
        lines.append(f"The query was made at {user.where(rootdir)}:  {user.source_line}")
    if engine is not None:
        lines.append(f"The connection came from {engine}.")
    for fixture in scopes.other_loop_fixtures:
        theirs, ours = _loop_names(fixture.loop, scopes.test)
        lines.append(
            f"Async fixture `{fixture.name}` (scope={fixture.scope}) runs on the {theirs}, not on"
            f" the test's {ours}: connections or sessions it creates cannot be used by the test."
        )
    if scopes.ignored_event_loop is not None:
        lines.append(
            f"`event_loop` fixture in {scopes.ignored_event_loop}: pytest-asyncio >= 1.0 ignores"
            " it, it does not make tests share a loop."
        )
    lines += ["", "How to fix it:"]
    lines.append(
        "  - let pgharness open the connection on the test's loop: use the `async_db` /"
        " `async_client` fixtures and name your sessionmakers in `pgharness_sessionmakers`;"
    )
    wider = scopes.other_scopes
    target = wider[0] if len(wider) == 1 else "session"
    pooled = engine is not None and "NullPool" not in engine
    lines += [f"  - or {fix};" for fix in _other_runner_fixes(scopes, item.config)]
    on_pytest_asyncio = scopes.test is None or scopes.test.runner == PYTEST_ASYNCIO
    if on_pytest_asyncio and (wider or not (pooled or scopes.other_runners)):
        lines.append(
            "  - or run the test on the fixtures' loop:"
            f' `@pytest.mark.asyncio(loop_scope="{target}")` on the test, or'
            f' `asyncio_default_test_loop_scope = "{target}"` (with'
            f' `asyncio_default_fixture_loop_scope = "{target}"`) in [tool.pytest.ini_options];'
        )
        lines.append(
            "  - or give the fixtures the test's loop:"
            f' `@pytest_asyncio.fixture(loop_scope="{scopes.test_loop_scope or "function"}")`;'
        )
    if pooled or engine is None:
        lines.append(
            "  - for an engine shared by tests: `poolclass=NullPool` in tests, or create it in a"
            " fixture on the test's loop and `await engine.dispose()` at teardown (a pooled"
            " connection can never move to another loop)"
            + (
                "; or run every test on one loop:"
                ' `asyncio_default_test_loop_scope = "session"` and'
                ' `asyncio_default_fixture_loop_scope = "session"`;'
                if on_pytest_asyncio
                else ";"
            )
        )
    if scopes.ignored_event_loop is not None:
        lines.append("  - delete the `event_loop` fixture: it has no effect.")
    return "\n".join(lines)


def name_fixtures_on_other_loops(item: pytest.Item) -> str | None:
    """For pgharness's own CrossLoopError: which of the test's fixtures run on another loop."""
    scopes = _scopes(item)
    test = scopes.test
    if test is None or not scopes.other_loop_fixtures:
        return None
    # Name the plugin when it matters: when some fixture's loop is another plugin's.
    named = test.label if scopes.other_runners or test.runner == ANYIO else test.short_label
    lines = [
        f"The test runs on {_a(named)} ({test.source}); these async fixtures run on another loop:"
    ]
    for fixture in scopes.other_loop_fixtures:
        if fixture.loop.runner == test.runner:
            where = f"loop scope {fixture.loop.scope}"
        elif fixture.loop.runner == ANYIO:
            where = f"run by anyio's plugin on the {fixture.loop.label}"
        else:
            where = f"run by pytest-asyncio on its {fixture.loop.short_label}"
        lines.append(f"  - `{fixture.name}` (scope={fixture.scope}, {where})")
    loop_scopes = scopes.other_scopes
    if loop_scopes and test.runner == PYTEST_ASYNCIO:
        lines.append(
            f'Fix: `@pytest_asyncio.fixture(loop_scope="{test.scope}")` on those'
            f' fixtures, or `@pytest.mark.asyncio(loop_scope="{loop_scopes[-1]}")` on the test'
            f' (or asyncio_default_test_loop_scope = "{loop_scopes[-1]}").'
        )
    other_runner_fixes = _other_runner_fixes(scopes, item.config)
    if other_runner_fixes:
        lines.append("Fix: " + "; or ".join(other_runner_fixes) + ".")
    return "\n".join(lines)


def _a(label: str) -> str:
    """``the anyio test runner loop`` (there is one), ``a module-scoped loop`` (one of many)."""
    return f"the {label}" if label.startswith("anyio") else f"a {label}"


def _runs_on(test: LoopChoice | None) -> str:
    """The sentence saying which loop the test runs on."""
    if test is None:
        return "this test runs on a loop of its own."
    if test.runner == ANYIO:
        return (
            f"anyio's plugin runs this test on its test runner loop ({test.source}), which it"
            " replaces with a new one whenever nothing holds it (between tests, unless a"
            " wider-scoped async fixture keeps it)."
        )
    return f"pytest-asyncio runs this test on a {test.scope}-scoped loop ({test.source})."


def _loop_names(fixture: LoopChoice, test: LoopChoice | None) -> tuple[str, str]:
    """How to name a fixture's loop and the test's beside each other."""
    if test is None:  # not reached: only a test some plugin runs has fixtures on other loops
        return fixture.label, "loop"
    if fixture.runner == test.runner:
        return fixture.short_label, test.short_label
    return fixture.label, test.label


def _other_runner_fixes(scopes: _Scopes, config: pytest.Config) -> list[str]:
    """Fixes for async fixtures that the other plugin runs (anyio vs pytest-asyncio)."""
    others = scopes.other_runners
    if scopes.test is None or not others:
        return []
    names = ", ".join(f"`{fixture.name}`" for fixture in others)
    if scopes.test.runner == ANYIO:
        return [
            f"make {names} plain `@pytest.fixture` async fixtures: in a test anyio runs, anyio's"
            " plugin then runs them on the test's loop (pytest-asyncio runs an"
            " `@pytest_asyncio.fixture` on a loop of its own)"
        ]
    fixes = []
    if asyncio_mode(config) == "auto":
        fixes.append(
            "set `asyncio_mode = strict`: anyio's plugin then runs @pytest.mark.anyio tests and"
            f" their fixtures ({names}) on one loop (mark the tests pytest-asyncio should run"
            " with @pytest.mark.asyncio)"
        )
    fixes.append(
        "drop @pytest.mark.anyio (and any request of the `anyio_backend` fixture) from the tests"
        f" pytest-asyncio runs: pytest-asyncio then runs {names} on the test's loop"
    )
    return fixes


def _busy_from_another_loop(
    frames: list[Frame],
    driver_loop: asyncio.AbstractEventLoop | None,
    scopes: _Scopes,
    rootdir: Path | None,
) -> bool:
    """Whether 'another operation is in progress' is the other-loop trouble one step later.

    A query sent from the wrong loop is cut off half-way and leaves the connection busy;
    while that loop stays open, the next query on the connection says so.
    """
    running = _loop_running(frames)
    if driver_loop is not None and running is not None:
        return driver_loop is not running
    # The loops cannot be compared: an async fixture on another loop than the test's, and no
    # asyncio.gather / create_task in the user's code, make the loop the likelier cause.
    return bool(scopes.other_loop_fixtures) and _concurrency_site(frames, rootdir) is None


def _loop_running(frames: list[Frame]) -> asyncio.AbstractEventLoop | None:
    """The event loop that ran the failing code (innermost loop method in the traceback)."""
    for frame in reversed(frames):
        if frame.module.startswith("asyncio."):
            loop = frame.local("self")
            if _is_event_loop(loop):
                return loop
    return None


def _explain_lost_savepoint(item: pytest.Item, user: Frame | None, rootdir: Path | None) -> str:
    lines = [
        "A session ended a savepoint that was already gone: two sessions worked on one"
        " connection at the same time, and one released or rolled back to its savepoint"
        " while the other's savepoint was open inside it, which ended that one too.",
    ]
    if _in_transaction_isolation(item):
        lines.append(
            "In pgharness's transaction isolation (the default) every session in the test"
            " shares the test's one connection; concurrent requests or tasks interleave their"
            " savepoints."
        )
    if user is not None:
        lines.append(f"The failing operation: {user.where(rootdir)}:  {user.source_line}")
    lines += [
        "",
        "How to fix it:",
        "  - await the requests or operations one after another instead of `asyncio.gather(...)`"
        " / `create_task(...)`;",
        '  - or give the test a database of its own: `@pytest.mark.pg_isolation("database")`'
        " (a real pool: each concurrent session gets its own connection).",
    ]
    return "\n".join(lines)


def _in_transaction_isolation(item: pytest.Item) -> bool:
    if not wants_isolation(item):
        return False
    try:
        return isolation_mode_of(item) is IsolationMode.TRANSACTION
    except ConfigurationError:
        return False  # the test failed at set-up, saying why


def _explain_concurrency(
    trouble: LoopTrouble,
    frames: list[Frame],
    user: Frame | None,
    engine: str | None,
    driver_loop: asyncio.AbstractEventLoop | None,
    rootdir: Path | None,
    state_change: bool,
) -> str:
    subject = "one AsyncSession" if trouble is LoopTrouble.CONCURRENT_SESSION else "one connection"
    lines = [
        f"Two operations ran at the same time on {subject}. A session and its connection serve"
        " one task at a time: the second operation started before the first finished.",
    ]
    if trouble is LoopTrouble.BUSY_CONNECTION:
        lines.append(
            "asyncpg's 'another operation is in progress' means a query was sent while another"
            " query on the same connection had not completed."
        )
    if state_change:
        lines.append(
            "SQLAlchemy refused a state change (such as close() or commit()) on the session while"
            " another of its operations was still in progress: typically a fixture closing the"
            " session while a task started by the test (asyncio.gather, create_task) still runs."
        )
    session_name = _shared_object_name(frames)
    if session_name is not None:
        lines.append(f"The shared object: {session_name}")
    spawner = _concurrency_site(frames, rootdir)
    if spawner is not None:
        lines.append(f"Concurrency started at {spawner}")
    if user is not None:
        lines.append(f"The failing operation: {user.where(rootdir)}:  {user.source_line}")
    for task in _other_tasks(driver_loop):
        lines.append(f"A task still running on that loop: {task}.")
    if engine is not None:
        lines.append(f"The connection came from {engine}.")
    lines += [
        "",
        "How to fix it:",
        "  - await the operations one after another instead of `asyncio.gather(...)` /"
        " `create_task(...)` over one session;",
        "  - or give each concurrent task its own session: `async with SessionLocal() as s:`"
        ' inside the task (with pgharness, `pg_isolation("database")` gives the test a real'
        " pool for code that needs several connections);",
        "  - await or cancel background tasks before the test (or the request) ends.",
    ]
    return "\n".join(lines)


def _scopes(item: pytest.Item) -> _Scopes:
    test = loop_of_test(item)
    others: list[_OtherLoopFixture] = []
    fixture_info: Any = getattr(item, "_fixtureinfo", None)
    name2defs: dict[str, Any] = getattr(fixture_info, "name2fixturedefs", {}) or {}
    for name, defs in name2defs.items():
        if test is None or not defs:
            continue
        fixturedef = defs[-1]
        loop = loop_of_fixture(item, fixturedef)
        if loop is not None and (loop.runner, loop.scope) != (test.runner, test.scope):
            others.append(_OtherLoopFixture(name, str(fixturedef.scope), loop))
    return _Scopes(test, others, _ignored_event_loop(item))


def _ignored_event_loop(item: pytest.Item) -> str | None:
    manager: Any = getattr(item.session, "_fixturemanager", None)
    try:
        defs = manager.getfixturedefs("event_loop", item) or ()
    except (AttributeError, TypeError):
        return None
    for fixturedef in defs:
        func = fixturedef.func
        if getattr(func, "__module__", "").startswith("pytest_asyncio"):
            continue
        try:
            filename = inspect.getsourcefile(func) or "?"
            lineno = inspect.getsourcelines(func)[1]
        except (OSError, TypeError):
            return "a conftest"
        return f"{_relative(Path(filename), item.config.rootpath)}:{lineno}"
    return None


def _relative(path: Path, rootdir: Path) -> str:
    try:
        return str(path.resolve().relative_to(rootdir.resolve()))
    except ValueError:
        return str(path)


def _engine_description(frames: list[Frame]) -> str | None:
    from sqlalchemy.engine import Connection, Engine

    for frame in frames:
        if frame.module != "sqlalchemy.engine.base":
            continue
        owner = frame.local("self")
        if is_instance(owner, Engine):
            engine: Any = owner
        elif is_instance(owner, Connection):
            engine = library_attribute(owner, "engine", _SQLALCHEMY)
        else:
            continue
        if not is_instance(engine, Engine):
            continue
        url = engine.url.render_as_string(hide_password=True)
        pool = type(engine.pool).__name__
        where = _global_name_of(engine)
        named = f"engine `{where}`" if where else "an engine"
        note = (
            "; a pool keeps connections open after the loop that opened them ends"
            if pool != "NullPool"
            else ""
        )
        return f"{named} ({url}, pool {pool}{note})"
    return None


def _global_name_of(engine: object) -> str | None:
    """`module:attr` of a module-level variable holding the engine (or its AsyncEngine).

    Every module's globals are looked at, so each is compared by identity and real type only:
    a global such as ``ctypes.cdll`` or a mock answers any attribute asked of it.
    """
    from sqlalchemy.ext.asyncio import AsyncEngine

    for module_name, module in list(sys.modules.items()):
        if not is_instance(module, types.ModuleType):
            continue
        namespace: dict[str, object] = vars(module)
        filename = namespace.get("__file__")
        if not isinstance(filename, str) or not filename or "site-packages" in filename:
            continue
        for attr, value in list(namespace.items()):
            if value is engine or (
                is_instance(value, AsyncEngine)
                and library_attribute(value, "sync_engine", _SQLALCHEMY) is engine
            ):
                return f"{module_name}:{attr}"
    return None


def _is_event_loop(value: object) -> TypeGuard[asyncio.AbstractEventLoop]:
    return issubclass(type(value), asyncio.AbstractEventLoop)


def _driver_connection_loop(frames: list[Frame]) -> asyncio.AbstractEventLoop | None:
    for frame in frames:
        if frame.module.startswith("asyncpg"):
            loop = library_attribute(frame.local("self"), "_loop", _ASYNCPG)
            if _is_event_loop(loop):
                return loop
        if frame.module.startswith("sqlalchemy.dialects.postgresql.asyncpg"):
            adapted = frame.local("self")
            if adapted is None:
                adapted = frame.local("adapt_connection")
            driver = library_attribute(adapted, "_connection", _SQLALCHEMY)
            loop = library_attribute(driver, "_loop", _ASYNCPG)
            if _is_event_loop(loop):
                return loop
    return None


def _shared_object_name(frames: list[Frame]) -> str | None:
    """Name the AsyncSession used concurrently, as the user's code calls it."""
    shared: object | None = None
    for frame in frames:
        if frame.module == "sqlalchemy.ext.asyncio.session":
            shared = frame.local("self")
            break
    if shared is None:
        return None
    for frame in frames:
        if is_library_frame(frame):
            continue
        for name, value in frame.frame.f_locals.items():
            if value is shared:
                return (
                    f"the AsyncSession `{name}` in {frame.function}()"
                    f" ({Path(frame.filename).name}:{frame.lineno})"
                )
    return "an AsyncSession"


_SPAWNERS = ("gather(", "create_task(", "ensure_future(", "TaskGroup", "as_completed(", "wait(")


def _concurrency_site(frames: list[Frame], rootdir: Path | None) -> str | None:
    for frame in frames:
        if is_library_frame(frame):
            continue
        line = frame.source_line
        if any(spawner in line for spawner in _SPAWNERS):
            return f"{frame.where(rootdir)}:  {line}"
    return None


def _other_tasks(loop: asyncio.AbstractEventLoop | None) -> list[str]:
    if loop is None or loop.is_closed():
        return []
    described: list[str] = []
    for task in asyncio.all_tasks(loop):
        if task.done():
            continue
        coro = task.get_coro()
        if not inspect.iscoroutine(coro):
            described.append(f"{task.get_name()}()")
            continue
        frame = coro.cr_frame
        where = f" at {Path(frame.f_code.co_filename).name}:{frame.f_lineno}" if frame else ""
        described.append(f"{coro.__qualname__}(){where}")
    return described[:5]
