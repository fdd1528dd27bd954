"""Which event loop a test runs on, and how to run harness coroutines on it.

Every pytest-asyncio and anyio specific lives here: the driver for a test's loop, and the
rules the diagnostics and the doctor use to tell which loop a test or an async fixture runs on.

Who runs an ``async def`` test is decided at collection. pytest-asyncio (>= 1.0) replaces the
test's item with its own (``PytestAsyncioFunction``) when the test carries the ``asyncio``
marker, which ``asyncio_mode = auto`` adds to every async test, ``@pytest.mark.anyio`` ones
included; that item hands pytest a synchronous wrapper, so anyio's ``pytest_pyfunc_call`` no
longer sees a coroutine function and leaves the test alone. pytest-asyncio keeps one
``asyncio.Runner`` per loop scope in fixtures named ``_{scope}_scoped_runner``; a test runs on
the runner of its marker's ``loop_scope`` or, without one, of the ini key
``asyncio_default_test_loop_scope`` (default ``function``). A test pytest-asyncio left alone
that uses ``anyio_backend`` (``@pytest.mark.anyio``, strict mode) is run by anyio's plugin on
its one shared runner, leased through ``anyio.pytest_plugin.get_runner``.

Async fixtures are a separate decision. Both plugins wrap them in ``pytest_fixture_setup``:
anyio those of tests that use ``anyio_backend``, pytest-asyncio ``@pytest_asyncio.fixture``
ones (every async fixture in auto mode). When both want one, the outer hook wrapper (the
plugin registered last) runs it, so under auto mode an anyio-marked test's fixtures can run on
anyio's loop while the test runs on pytest-asyncio's.

The harness opens the test's connection on the loop the test body runs on, whatever the
fixture loop settings are, by driving its own setup and teardown through that runner
(``LoopDriver.run``). Sync tests get the harness's own loop thread instead (``_portal.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol, TypeVar

import pytest

from ._errors import ConfigurationError

__all__ = [
    "ANYIO",
    "HARNESS_LOOP_LABEL",
    "PYTEST_ASYNCIO",
    "SCOPES",
    "LoopChoice",
    "LoopDriver",
    "LoopSettings",
    "RunnerDriver",
    "asyncio_mode",
    "fixture_loop_scope",
    "is_async_test",
    "is_wider",
    "loop_driver_for_async_test",
    "loop_of_fixture",
    "loop_of_test",
    "loop_settings",
    "pytest_asyncio_version",
]

T = TypeVar("T")

#: pytest-asyncio's loop scopes, narrowest first.
SCOPES = ("function", "class", "module", "package", "session")

PYTEST_ASYNCIO = "pytest-asyncio"
ANYIO = "anyio"

#: How errors name the loop thread that runs def tests' database work (``_portal.py``).
HARNESS_LOOP_LABEL = "pgharness's loop thread for def tests"
ANYIO_LOOP_LABEL = "anyio test runner loop"

# pytest-asyncio's value of asyncio_default_fixture_loop_scope meaning "the fixture's scope".
_MATCH_FIXTURE_SCOPE = "fixture-scope"
_PYTEST_ASYNCIO_PLUGIN = "pytest_asyncio.plugin"
_ANYIO_PLUGIN = "anyio.pytest_plugin"


# -- the rules --------------------------------------------------------------------------------


def is_wider(scope: str, than: str) -> bool:
    """Whether loop scope ``scope`` outlives ``than`` (unknown scopes are never wider)."""
    if scope not in SCOPES or than not in SCOPES:
        return False
    return SCOPES.index(scope) > SCOPES.index(than)


@dataclass(frozen=True)
class LoopSettings:
    """pytest-asyncio's loop-scope ini keys as the run sees them."""

    #: ``asyncio_default_test_loop_scope`` as written (pytest-asyncio's default is ``function``).
    test_scope_setting: str
    #: ``asyncio_default_fixture_loop_scope``; ``None`` when unset.
    fixture_scope_setting: str | None

    @property
    def test_scope(self) -> str:
        return self.test_scope_setting or "function"


def loop_settings(config: pytest.Config) -> LoopSettings | None:
    """The loop-scope settings, or ``None`` when pytest-asyncio is not active in the run."""
    try:
        test_scope = config.getini("asyncio_default_test_loop_scope")
        fixture_scope = config.getini("asyncio_default_fixture_loop_scope")
    except ValueError:  # the keys are registered by pytest-asyncio's plugin only
        return None
    return LoopSettings(str(test_scope or ""), str(fixture_scope) if fixture_scope else None)


def fixture_loop_scope(own: str | None, fixture_scope: str, default: str | None) -> str:
    """pytest-asyncio's rule for an async fixture's loop scope.

    The fixture's own ``loop_scope``, else ``asyncio_default_fixture_loop_scope``
    (``fixture-scope`` meaning the fixture's scope), else the fixture's scope.
    """
    if own:
        return own
    if default and default != _MATCH_FIXTURE_SCOPE:
        return default
    return fixture_scope


def pytest_asyncio_version() -> tuple[int, ...]:
    """The installed pytest-asyncio's (major, minor); ``(1, 0)`` when it is not installed."""
    try:
        text = metadata.version("pytest-asyncio")
    except metadata.PackageNotFoundError:
        return (1, 0)
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


# -- which loop a test or a fixture runs on ---------------------------------------------------


@dataclass(frozen=True)
class LoopChoice:
    """The plugin that runs a test or an async fixture, and which of its loops."""

    runner: str  # PYTEST_ASYNCIO or ANYIO
    #: pytest-asyncio's loop scope; ``None`` for anyio, which has one runner for everything.
    scope: str | None
    #: What chose it, as the user would write it (``@pytest.mark.asyncio(loop_scope="module")``).
    source: str

    @property
    def label(self) -> str:
        """How error messages name the loop (``pytest-asyncio module-scoped loop``)."""
        if self.runner == ANYIO:
            return ANYIO_LOOP_LABEL
        return f"pytest-asyncio {self.scope}-scoped loop"

    @property
    def short_label(self) -> str:
        """The loop named for a reader who knows the runner (``module-scoped loop``)."""
        if self.runner == ANYIO:
            return ANYIO_LOOP_LABEL
        return f"{self.scope}-scoped loop"


def is_async_test(item: pytest.Item) -> bool:
    function = getattr(item, "obj", None)
    return function is not None and (
        inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
    )


def loop_of_test(item: pytest.Item) -> LoopChoice | None:
    """The loop the ``async def`` test ``item`` runs on; ``None`` when no plugin runs it.

    Decided by who really runs the test (see the module docstring): under
    ``asyncio_mode = auto`` that is pytest-asyncio even for ``@pytest.mark.anyio`` tests.
    """
    if not is_async_test(item):
        return None
    uses_anyio = "anyio_backend" in getattr(item, "fixturenames", ())
    if _collected_by_pytest_asyncio(item):
        return _pytest_asyncio_test_loop(item, anyio_marked=uses_anyio)
    if uses_anyio:
        return LoopChoice(ANYIO, None, "@pytest.mark.anyio")
    if item.get_closest_marker("asyncio") is not None:
        # Marked, but pytest-asyncio did not collect it (its plugin is not active): the driver
        # reports that pytest-asyncio's runner is missing.
        return _pytest_asyncio_test_loop(item, anyio_marked=False)
    return None


def loop_of_fixture(item: pytest.Item, fixturedef: Any) -> LoopChoice | None:
    """The loop the async fixture ``fixturedef`` runs on for ``item``; ``None`` if no plugin
    runs it (or it is not async)."""
    func = fixturedef.func
    if not (inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)):
        return None
    config = item.config
    plugins = _plugin_modules(config)
    by_anyio = _ANYIO_PLUGIN in plugins and "anyio_backend" in getattr(item, "fixturenames", ())
    by_pytest_asyncio = _PYTEST_ASYNCIO_PLUGIN in plugins and (
        _marked_pytest_asyncio_fixture(func) or asyncio_mode(config) == "auto"
    )
    if by_anyio and by_pytest_asyncio:
        runner = _outer_fixture_wrapper(config) or ANYIO
    elif by_anyio:
        runner = ANYIO
    elif by_pytest_asyncio:
        runner = PYTEST_ASYNCIO
    else:
        return None
    if runner == ANYIO:
        return LoopChoice(ANYIO, None, "anyio's plugin (the test uses anyio_backend)")
    own = _function_attribute(func, "_loop_scope")
    settings = loop_settings(config)
    default = settings.fixture_scope_setting if settings is not None else None
    scope = fixture_loop_scope(
        own if isinstance(own, str) else None, str(fixturedef.scope), default
    )
    return LoopChoice(PYTEST_ASYNCIO, scope, "pytest-asyncio's fixture loop scope")


def _pytest_asyncio_test_loop(item: pytest.Item, *, anyio_marked: bool) -> LoopChoice:
    marker = item.get_closest_marker("asyncio")
    marked = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope") if marker else None
    settings = loop_settings(item.config)
    if marked:
        scope, source = str(marked), f'@pytest.mark.asyncio(loop_scope="{marked}")'
    elif settings is not None and settings.test_scope_setting:
        scope = settings.test_scope_setting
        source = f'asyncio_default_test_loop_scope = "{scope}"'
    else:
        scope, source = "function", "pytest-asyncio's default"
    if anyio_marked:  # say why pytest-asyncio, not anyio, runs an anyio test
        source += (
            "; asyncio_mode = auto makes pytest-asyncio run @pytest.mark.anyio tests"
            if asyncio_mode(item.config) == "auto"
            else "; its asyncio marker makes pytest-asyncio run it, not anyio"
        )
    return LoopChoice(PYTEST_ASYNCIO, scope, source)


def _collected_by_pytest_asyncio(item: pytest.Item) -> bool:
    """Whether pytest-asyncio made this item its own, and so runs the test."""
    return any(
        cls.__name__ == "PytestAsyncioFunction" and cls.__module__.startswith("pytest_asyncio")
        for cls in type(item).__mro__
    )


def _plugin_modules(config: pytest.Config) -> set[str]:
    return {
        plugin.__name__
        for plugin in config.pluginmanager.get_plugins()
        if isinstance(plugin, types.ModuleType)
    }


def asyncio_mode(config: pytest.Config) -> str:
    """pytest-asyncio's mode (``auto`` or ``strict``); ``""`` when it is not active."""
    mode = config.getoption("asyncio_mode", None)
    if mode is None:
        try:
            mode = config.getini("asyncio_mode")
        except ValueError:
            return ""
    return str(mode)


def _marked_pytest_asyncio_fixture(func: Callable[..., object]) -> bool:
    """Whether ``func`` is an ``@pytest_asyncio.fixture`` (it marks the function)."""
    return _function_attribute(func, "_force_asyncio_fixture") is True


def _outer_fixture_wrapper(config: pytest.Config) -> str | None:
    """Which of anyio and pytest-asyncio wraps ``pytest_fixture_setup`` outermost.

    pluggy calls hook implementations last-registered first; a wrapper called first is the
    outer one, and the outer plugin takes an async fixture both would run.
    """
    for impl in reversed(config.hook.pytest_fixture_setup.get_hookimpls()):
        if not (impl.hookwrapper or impl.wrapper) or not isinstance(impl.plugin, types.ModuleType):
            continue
        if impl.plugin.__name__ == _ANYIO_PLUGIN:
            return ANYIO
        if impl.plugin.__name__ == _PYTEST_ASYNCIO_PLUGIN:
            return PYTEST_ASYNCIO
    return None


def _function_attribute(func: Callable[..., object], name: str) -> object | None:
    """An attribute a decorator stored on a fixture function, read from its ``__dict__``."""
    if inspect.ismethod(func):
        func = func.__func__
    if not inspect.isfunction(func):
        return None
    return func.__dict__.get(name)


# -- driving the test's loop ------------------------------------------------------------------


class LoopDriver(Protocol):
    """Runs harness coroutines on one event loop, from the thread pytest calls fixtures on."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def label(self) -> str:
        """Human words for the loop, for error messages (``pytest-asyncio module-scoped loop``)."""
        ...

    def run(self, make: Callable[[], Awaitable[T]]) -> T: ...

    def release(self) -> None:
        """Give back whatever keeps the loop alive for this test."""
        ...


@dataclass
class RunnerDriver:
    """A pytest-asyncio ``asyncio.Runner`` (or anyio's test runner) as a ``LoopDriver``."""

    runner: Any
    label: str
    _run: Callable[[Callable[[], Awaitable[Any]]], Any]
    _release: Callable[[], None] = field(default=lambda: None)
    #: Whether the loop may run further tests (not a pytest-asyncio per-test loop). anyio's
    #: runner lives while anything holds it, which the test cannot know: it counts as lasting.
    outlives_test: bool = True

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop = self.runner.get_loop()
        return loop

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        result: T = self._run(make)
        return result

    def release(self) -> None:
        self._release()


def loop_driver_for_async_test(request: pytest.FixtureRequest) -> RunnerDriver:
    """The loop the current ``async def`` test will run on, found without running anything."""
    node = request.node
    if "anyio_backend" in request.fixturenames:
        _skip_unless_anyio_asyncio(request)
    choice = loop_of_test(node)
    if choice is not None and choice.runner == ANYIO:
        return _anyio_driver(request)
    if choice is not None and choice.scope is not None:
        return _pytest_asyncio_driver(request, choice.scope)
    raise ConfigurationError(
        f"{node.nodeid} is an async test that neither pytest-asyncio nor anyio runs, so pgharness "
        "cannot tell which event loop to open its connection on. Fix: mark it with "
        "@pytest.mark.asyncio (or set asyncio_mode = auto), or use anyio's @pytest.mark.anyio."
    )


def _skip_unless_anyio_asyncio(request: pytest.FixtureRequest) -> None:
    """A test parametrized to anyio's trio backend cannot use asyncpg: skip it, saying why."""
    from anyio import pytest_plugin

    backend = request.getfixturevalue("anyio_backend")
    name, _ = pytest_plugin.extract_backend_and_options(backend)
    if name != "asyncio":
        pytest.skip(
            f"pgharness needs an asyncio event loop (asyncpg runs on asyncio only); anyio backend"
            f" {name!r} cannot run this test's database. Use anyio_backend = 'asyncio' for tests"
            " that use pgharness."
        )


def _pytest_asyncio_driver(request: pytest.FixtureRequest, scope: str) -> RunnerDriver:
    if scope not in SCOPES:
        raise ConfigurationError(
            f"{request.node.nodeid}: unknown pytest-asyncio loop scope {scope!r}"
        )
    name = f"_{scope}_scoped_runner"
    try:
        runner = request.getfixturevalue(name)
    except pytest.FixtureLookupError as exc:
        raise ConfigurationError(
            f"pgharness could not find pytest-asyncio's event loop runner {name!r} for "
            f"{request.node.nodeid}. This pytest-asyncio version keeps its loops differently; "
            "pgharness supports pytest-asyncio 1.x. Fix: install pytest-asyncio>=1.0,<2."
        ) from exc
    if not (hasattr(runner, "run") and hasattr(runner, "get_loop")):
        raise ConfigurationError(
            f"pytest-asyncio's fixture {name!r} is a {type(runner).__name__}, not an "
            "asyncio.Runner; pgharness supports pytest-asyncio 1.x. Fix: install "
            "pytest-asyncio>=1.0,<2."
        )

    def run(make: Callable[[], Awaitable[Any]]) -> Any:
        return runner.run(_as_coroutine(make))

    return RunnerDriver(
        runner=runner,
        label=f"pytest-asyncio {scope}-scoped loop",
        _run=run,
        outlives_test=scope != "function",
    )


def _anyio_driver(request: pytest.FixtureRequest) -> RunnerDriver:
    from anyio import pytest_plugin

    backend = request.getfixturevalue("anyio_backend")
    name, options = pytest_plugin.extract_backend_and_options(backend)
    lease: contextlib.AbstractContextManager[Any] = pytest_plugin.get_runner(name, options)
    runner = lease.__enter__()

    def run(make: Callable[[], Awaitable[Any]]) -> Any:
        async def call() -> Any:
            return await make()

        return runner.run_fixture(call, {})

    def release() -> None:
        lease.__exit__(None, None, None)

    return RunnerDriver(runner=runner, label=ANYIO_LOOP_LABEL, _run=run, _release=release)


async def _as_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
