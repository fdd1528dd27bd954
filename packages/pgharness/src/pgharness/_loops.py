"""Which event loop a test runs on, and how to run harness coroutines on it.

Every pytest-asyncio and anyio specific lives here. pytest-asyncio (>= 1.0) keeps one
``asyncio.Runner`` per loop scope in fixtures named ``_{scope}_scoped_runner``; a test runs
on the runner of its ``asyncio`` marker's ``loop_scope`` or, without one, of the ini key
``asyncio_default_test_loop_scope`` (default ``function``). anyio's plugin runs a test and its
async fixtures on one shared runner, leased through ``anyio.pytest_plugin.get_runner``.

The harness opens the test's connection on exactly that loop, whatever the fixture loop scope
settings are, by driving its own setup and teardown through the runner (``LoopDriver.run``).
Sync tests get the harness's own loop thread instead (``_portal.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pytest

from ._errors import ConfigurationError

__all__ = [
    "HARNESS_LOOP_LABEL",
    "LoopDriver",
    "RunnerDriver",
    "is_async_test",
    "loop_driver_for_async_test",
]

T = TypeVar("T")

_SCOPES = ("function", "class", "module", "package", "session")

#: How errors name the loop thread that runs def tests' database work (``_portal.py``).
HARNESS_LOOP_LABEL = "pgharness's loop thread for def tests"


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


def is_async_test(item: pytest.Item) -> bool:
    function = getattr(item, "obj", None)
    return function is not None and (
        inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
    )


@dataclass
class RunnerDriver:
    """A pytest-asyncio ``asyncio.Runner`` (or anyio's test runner) as a ``LoopDriver``."""

    runner: Any
    label: str
    _run: Callable[[Callable[[], Awaitable[Any]]], Any]
    _release: Callable[[], None] = field(default=lambda: None)

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
        return _anyio_driver(request)
    marker = node.get_closest_marker("asyncio")
    if marker is not None:
        return _pytest_asyncio_driver(request, marker)
    raise ConfigurationError(
        f"{node.nodeid} is an async test that neither pytest-asyncio nor anyio runs, so pgharness "
        "cannot tell which event loop to open its connection on. Fix: mark it with "
        "@pytest.mark.asyncio (or set asyncio_mode = auto), or use anyio's @pytest.mark.anyio."
    )


def _pytest_asyncio_loop_scope(request: pytest.FixtureRequest, marker: pytest.Mark) -> str:
    scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    if scope is None:
        try:
            scope = request.config.getini("asyncio_default_test_loop_scope")
        except ValueError:
            scope = None
    return str(scope or "function")


def _pytest_asyncio_driver(request: pytest.FixtureRequest, marker: pytest.Mark) -> RunnerDriver:
    scope = _pytest_asyncio_loop_scope(request, marker)
    if scope not in _SCOPES:
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

    return RunnerDriver(runner=runner, label=f"pytest-asyncio {scope}-scoped loop", _run=run)


def _anyio_driver(request: pytest.FixtureRequest) -> RunnerDriver:
    from anyio import pytest_plugin

    backend = request.getfixturevalue("anyio_backend")
    name, options = pytest_plugin.extract_backend_and_options(backend)
    if name != "asyncio":
        pytest.skip(
            f"pgharness needs an asyncio loop (asyncpg); anyio backend {name!r} cannot run it"
        )
    lease: contextlib.AbstractContextManager[Any] = pytest_plugin.get_runner(name, options)
    runner = lease.__enter__()

    def run(make: Callable[[], Awaitable[Any]]) -> Any:
        async def call() -> Any:
            return await make()

        return runner.run_fixture(call, {})

    def release() -> None:
        lease.__exit__(None, None, None)

    return RunnerDriver(runner=runner, label="anyio test runner loop", _run=run, _release=release)


async def _as_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
