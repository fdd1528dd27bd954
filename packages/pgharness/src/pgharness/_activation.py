"""Which tests get isolation, on which loop, and the state shared by a whole test session.

The autouse fixture calls ``activate`` for every test; it returns at once (no IO) unless the
test asks for a pgharness fixture or carries ``pg_isolation``. Then the test's database side
(``TestIsolation``) is started on the loop the test runs on: the test's own loop for
``async def`` tests (pytest-asyncio or anyio), the harness loop thread for ``def`` tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from . import _blocker as blocker
from ._config import Settings
from ._errors import ConfigurationError
from ._isolation import (
    AppSessionmaker,
    EngineCache,
    IsolationMode,
    TestIsolation,
    load_sessionmakers,
    pg_isolation,
    required_mode,
)
from ._loops import LoopDriver, RunnerDriver, is_async_test, loop_driver_for_async_test
from ._portal import HarnessLoop

__all__ = [
    "BLOCKED_REPORTED",
    "TEST_FIXTURE",
    "ActiveTest",
    "SessionState",
    "activate",
    "check_app_objects",
    "count_database_tests",
    "isolation_mode_of",
    "wants_isolation",
]

_ASYNC_ONLY = {"async_db": "db", "async_client": "client"}
_SYNC_ONLY = {"db": "async_db", "client": "async_client"}


class _Ref(Protocol):
    setting: str

    def load(self) -> object: ...


def check_app_objects(settings: Settings) -> tuple[AppSessionmaker, ...]:
    """Import and type-check the sessionmakers and the app the settings name.

    Called when the harness starts (only in runs whose tests use pgharness), so that a setting
    naming the wrong object stops the run with one message instead of erroring every test at
    set-up. Raises ``ConfigurationError`` naming the setting and the fix. A factory named by
    ``pgharness_app`` is not called here: each client fixture calls it. Returns the
    sessionmakers.
    """
    makers = load_sessionmakers([(str(ref), ref.load) for ref in settings.sessionmakers])
    if settings.app is not None:
        app = settings.app.load()
        if not callable(app):
            from ._clients import resolve_app

            resolve_app(str(settings.app), app)  # raises its ConfigurationError
    return makers


class _Database(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def sync_url(self) -> str: ...


@dataclass
class SessionState:
    """Per test session: engines, the harness loop thread, the imported app objects."""

    engines: EngineCache = field(default_factory=EngineCache)
    harness_loop: HarnessLoop = field(default_factory=HarnessLoop)
    _makers: tuple[AppSessionmaker, ...] | None = None
    _app: tuple[str, object] | None = None

    def sessionmakers(self, refs: tuple[_Ref, ...]) -> tuple[AppSessionmaker, ...]:
        if self._makers is None:
            self._makers = load_sessionmakers([(str(ref), ref.load) for ref in refs])
        return self._makers

    def app_object(self, ref: _Ref | None) -> tuple[str, object]:
        if ref is None:
            raise ConfigurationError(
                "client and async_client need the app: set pgharness_app = 'pkg.module:app' "
                "(an ASGI app or a zero-argument factory) in [tool.pytest.ini_options]."
            )
        if self._app is None:
            self._app = (str(ref), ref.load())
        return self._app

    def close(self) -> None:
        try:
            self.harness_loop.close()
        finally:
            self.engines.dispose()


@dataclass
class ActiveTest:
    """A test with isolation set up: its database side and the loop that owns it."""

    isolation: TestIsolation
    driver: LoopDriver
    is_async: bool
    database: Any  # PgDatabase
    state: SessionState
    harness: Any  # Harness
    _cleanups: list[Callable[[], None]] = field(default_factory=list)


#: The private fixture every public pgharness fixture asks for (``fixtures.py``).
TEST_FIXTURE = "_pg_test"

#: Set on a test whose failure already shows a blocked connection's message.
BLOCKED_REPORTED = pytest.StashKey[bool]()


def wants_isolation(item: pytest.Item) -> bool:
    """Whether ``item`` uses pgharness: one of its fixtures (through ``_pg_test``, so a
    project's own ``client`` or ``db`` does not count) or the ``pg_isolation`` marker."""
    return TEST_FIXTURE in getattr(item, "fixturenames", ()) or (
        item.get_closest_marker("pg_isolation") is not None
    )


def isolation_mode_of(item: pytest.Item) -> IsolationMode:
    marker = item.get_closest_marker("pg_isolation")
    if marker is None:
        return IsolationMode.TRANSACTION
    try:
        return pg_isolation(*marker.args, **marker.kwargs)
    except TypeError:
        raise ConfigurationError(
            f"@pytest.mark.pg_isolation{marker.args!r}: takes one argument, 'transaction' or "
            "'database', e.g. @pytest.mark.pg_isolation(\"database\")."
        ) from None


def count_database_tests(items: list[pytest.Item]) -> int:
    """How many of ``items`` carry ``pg_isolation("database")`` (for sizing the warm pool)."""
    count = 0
    for item in items:
        if item.get_closest_marker("pg_isolation") is None:
            continue
        with contextlib.suppress(ConfigurationError, ValueError):
            count += isolation_mode_of(item) is IsolationMode.DATABASE
    return count


def _is_ours(item: pytest.Item, name: str) -> bool:
    """Whether ``name`` resolves to pgharness's fixture (a project may define its own ``db``)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}).get(name)
    if not defs:
        return True  # cannot tell: assume ours
    return str(getattr(defs[-1].func, "__module__", "")).startswith("pgharness.")


def _check_style(item: pytest.Item, is_async: bool) -> None:
    names = set(getattr(item, "fixturenames", ()))
    wrong = _SYNC_ONLY if is_async else _ASYNC_ONLY
    for name, instead in wrong.items():
        if name in names and _is_ours(item, name):
            kind, other = ("an async def", "def") if is_async else ("a def", "async def")
            pytest.fail(
                f"{item.nodeid} is {kind} test but uses {name!r}, which is for {other} tests. "
                f"Use {instead!r} instead (or make the test {other}).",
                pytrace=False,
            )


@contextlib.contextmanager
def activate(request: pytest.FixtureRequest, state_fixture: str) -> Iterator[ActiveTest]:
    """Set up the current test's isolation; undo it afterwards."""
    item = request.node
    is_async = is_async_test(item)
    _check_style(item, is_async)
    harness = request.getfixturevalue("_pg_session")
    state: SessionState = request.getfixturevalue(state_fixture)
    settings = harness.settings
    makers = state.sessionmakers(settings.sessionmakers)
    try:
        mode = required_mode(makers) or isolation_mode_of(item)
    except ConfigurationError as exc:
        pytest.fail(str(exc), pytrace=False)
    driver: LoopDriver = (
        loop_driver_for_async_test(request) if is_async else state.harness_loop.driver()
    )
    pool = harness.pool if mode is IsolationMode.DATABASE else None
    database = pool.acquire() if pool is not None else harness.worker_database
    isolation = TestIsolation(
        mode=mode,
        url=database.url,
        sync_url=database.sync_url,
        makers=makers,
        engines=state.engines,
        loop_label=driver.label,
        nodeid=item.nodeid,
        # The loop thread of def tests lives as long as the session.
        reuse=driver.outlives_test if isinstance(driver, RunnerDriver) else True,
    )
    problems: list[str] = []
    blocked_before = blocker.blocked_count()
    try:
        with blocker.test_isolation():
            isolation.start_sync()
            driver.run(isolation.start)
            yield ActiveTest(isolation, driver, is_async, database, state, harness)
    finally:
        # Each step undoes only what was done, so this also cleans up a failed start.
        try:
            problems = driver.run(isolation.stop)
        finally:
            try:
                isolation.stop_sync()
            finally:
                driver.release()
                if pool is not None:
                    pool.release(database)
    if not item.stash.get(BLOCKED_REPORTED, False):
        # The app may have swallowed the error (a 500, a retry): the test still must not pass.
        messages = list(dict.fromkeys(b.message for b in blocker.blocked_since(blocked_before)))
        problems.extend(messages[:1])
        if len(messages) > 1:
            problems.append(f"({len(messages) - 1} more connection(s) were stopped the same way)")
    if problems:
        pytest.fail(f"{item.nodeid}: " + "\n".join(problems), pytrace=False)
