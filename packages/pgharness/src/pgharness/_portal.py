"""The harness's event-loop thread for plain ``def`` tests, and the blocking ``db`` facade.

A sync test cannot run a coroutine itself, and a blocking driver inside the app's event loop
would hide what production does. So one thread per test session runs an asyncio loop (an anyio
``BlockingPortal``); the test's ``AsyncConnection``, the app's lifespan and every ``TestClient``
request live on it, and ``db`` submits each session call to it and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._loops import HARNESS_LOOP_LABEL

__all__ = ["BlockingSession", "HarnessLoop", "PortalDriver"]

T = TypeVar("T")


class HarnessLoop:
    """One asyncio loop on a thread of its own, started on first use, stopped by ``close``."""

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None
        self._portal: BlockingPortal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def portal(self) -> BlockingPortal:
        if self._portal is None:
            stack = contextlib.ExitStack()
            self._portal = stack.enter_context(start_blocking_portal("asyncio"))
            self._stack = stack
            self._loop = self._portal.call(_running_loop)
        return self._portal

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        _ = self.portal
        assert self._loop is not None
        return self._loop

    def driver(self) -> PortalDriver:
        return PortalDriver(self)

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._portal = self._loop = None


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


@dataclass
class PortalDriver:
    """``LoopDriver`` over the harness loop thread."""

    harness: HarnessLoop
    label: str = HARNESS_LOOP_LABEL

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.harness.loop

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        async def call() -> T:
            return await make()

        return self.harness.portal.call(call)

    def release(self) -> None:
        """The harness loop outlives tests: nothing to give back."""


class BlockingSession:
    """A blocking view of an ``AsyncSession`` on the harness loop, for ``def`` tests.

    Each call runs on the loop that owns the test's connection and waits for it; results of
    ``execute``/``scalars`` are buffered, so they can be read from the test's thread. Lazy
    loads are not hidden: reading an unloaded relationship fails as it would in the app.

    Example::

        def test_signup(client, db):
            client.post("/users", json={"email": "a@example.com"})
            user = db.scalar(select(User).where(User.email == "a@example.com"))
            assert user is not None
    """

    def __init__(self, session: Any, portal: BlockingPortal) -> None:
        self._session = session
        self._portal = portal

    @property
    def async_session(self) -> Any:
        """The ``AsyncSession`` underneath (use it only on the harness loop)."""
        return self._session

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def call() -> Any:
            result = function(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return self._portal.call(call)

    def add(self, instance: object) -> None:
        self._call(self._session.add, instance)

    def add_all(self, instances: Iterable[object]) -> None:
        self._call(self._session.add_all, list(instances))

    def delete(self, instance: object) -> None:
        self._call(self._session.delete, instance)

    def flush(self, objects: Sequence[object] | None = None) -> None:
        self._call(self._session.flush, objects)

    def commit(self) -> None:
        self._call(self._session.commit)

    def rollback(self) -> None:
        self._call(self._session.rollback)

    def refresh(self, instance: object, attribute_names: Iterable[str] | None = None) -> None:
        self._call(self._session.refresh, instance, attribute_names)

    def expunge_all(self) -> None:
        self._call(self._session.expunge_all)

    def expire_all(self) -> None:
        self._call(self._session.expire_all)

    def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
        return self._call(self._session.get, entity, ident, **kwargs)

    def execute(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        async def buffered() -> Any:
            result = await self._session.execute(statement, params, **kwargs)
            if getattr(result, "returns_rows", True):  # ORM results always return rows
                # An UPDATE/DELETE ... RETURNING (the ORM adds one to synchronize the
                # session) returns rows and has a rowcount: keep both.
                return result.freeze(), getattr(result, "rowcount", None)
            return _NoRows(result.rowcount)

        buffered_result = self._portal.call(buffered)
        if isinstance(buffered_result, _NoRows):
            return buffered_result
        frozen, rowcount = buffered_result
        rows = frozen()
        if rowcount is not None:
            rows.rowcount = rowcount
        return rows

    def scalar(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        return self._call(self._session.scalar, statement, params, **kwargs)

    def scalars(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        return self.execute(statement, params, **kwargs).scalars()

    def close(self) -> None:
        self._call(self._session.close)


@dataclass(frozen=True)
class _NoRows:
    """What ``execute`` returns for INSERT/UPDATE/DELETE without RETURNING."""

    rowcount: int

    def __call__(self) -> _NoRows:
        return self
