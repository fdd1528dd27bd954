"""Clients on the app: ``httpx.AsyncClient`` for async tests, ``TestClient`` for ``def`` tests.

Both run the app's lifespan on the loop that owns the test's connection: the test's own loop
for ``async_client``, the harness loop thread for ``client``. They share ``AppLifespan`` (the
ASGI lifespan protocol, no IO of its own) and ``resolve_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any

from ._config import ClientOptions
from ._errors import ConfigurationError

__all__ = ["AppLifespan", "HarnessTestClient", "open_async_client", "resolve_app"]


def resolve_app(name: str, obj: object) -> Callable[..., Any]:
    """The ASGI app named by ``pgharness_app``, calling it first if it is a factory."""
    if not callable(obj):
        raise ConfigurationError(
            f"pgharness_app names {name!r}, a {type(obj).__qualname__}, which is neither an ASGI "
            "app nor a zero-argument factory. Fix: name your FastAPI/Starlette app "
            "(myapp.main:app) or a function that returns one (myapp.main:create_app)."
        )
    if _is_factory(obj):
        app = obj()
        if not callable(app):
            raise ConfigurationError(
                f"pgharness_app names the factory {name!r}, which returned a "
                f"{type(app).__qualname__}, not an ASGI app. Fix: return the app from it."
            )
        return app  # type: ignore[no-any-return]
    return obj


def _is_factory(obj: Callable[..., Any]) -> bool:
    if not (inspect.isfunction(obj) or inspect.ismethod(obj)):
        return False  # an app instance (FastAPI, Starlette) is called with (scope, receive, send)
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return not required


class AppLifespan:
    """Runs an ASGI app's lifespan protocol; ``state`` is what it yielded, for each request."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._supported = True

    async def startup(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="pgharness app lifespan"
        )
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        if message is None:
            # The app returned or raised before answering: like servers, treat that as an
            # app without lifespan support.
            self._supported = False
            with contextlib.suppress(Exception):
                await self._task
            return
        if message["type"] == "lifespan.startup.failed":
            await self._stop_task()
            raise RuntimeError(f"the app's lifespan startup failed: {message.get('message', '')}")

    async def shutdown(self) -> None:
        if self._task is None or not self._supported:
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        message = await self._from_app.get()
        await self._stop_task()
        if message is not None and message["type"] == "lifespan.shutdown.failed":
            raise RuntimeError(f"the app's lifespan shutdown failed: {message.get('message', '')}")

    async def _stop_task(self) -> None:
        assert self._task is not None
        with contextlib.suppress(Exception):
            await self._task

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._to_app.get, self._from_app.put)
        finally:
            await self._from_app.put(None)

    def with_state(self) -> Callable[..., Any]:
        """The app, with the lifespan's state in each request's scope (as servers do)."""
        app, state = self.app, self.state

        async def app_with_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):
                scope = {**scope, "state": dict(state)}
            await app(scope, receive, send)

        return app_with_state


@contextlib.asynccontextmanager
async def open_async_client(app: Callable[..., Any], options: ClientOptions) -> Any:
    """``httpx.AsyncClient`` on ``app`` over ``ASGITransport``, lifespan run around it unless
    the options skip it."""
    import httpx

    lifespan = AppLifespan(app)
    if options.lifespan:
        await lifespan.startup()
    try:
        transport = httpx.ASGITransport(app=lifespan.with_state())
        async with httpx.AsyncClient(
            transport=transport, base_url=options.base_url, headers=list(options.headers)
        ) as client:
            yield client
    finally:
        await lifespan.shutdown()


def _test_client_class() -> type[Any]:
    import warnings

    with warnings.catch_warnings():
        # Newer Starlette asks for httpx2 on import; that is the app's dependency choice,
        # and it must not fail a user's test run under filterwarnings = error.
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from starlette.testclient import TestClient

    class _HarnessTestClient(TestClient):
        """A ``TestClient`` whose lifespan and requests run on the harness's loop thread."""

        __test__ = False

        def __init__(self, app: Any, portal: Any, **kwargs: Any) -> None:
            super().__init__(app, **kwargs)
            self.portal = self._harness_portal = portal

        @contextlib.contextmanager
        def _portal_factory(self) -> Iterator[Any]:
            yield self._harness_portal

        def __enter__(self) -> Any:
            from anyio import create_memory_object_stream
            from anyio.streams.stapled import StapledObjectStream

            portal = self._harness_portal
            with contextlib.ExitStack() as stack:
                send = create_memory_object_stream[Any](math.inf)
                receive = create_memory_object_stream[Any](math.inf)
                for channel in (*send, *receive):
                    stack.callback(channel.close)
                self.stream_send = StapledObjectStream(*send)
                self.stream_receive = StapledObjectStream(*receive)
                self.task = portal.start_task_soon(self.lifespan)
                portal.call(self.wait_startup)

                @stack.callback
                def wait_shutdown() -> None:
                    portal.call(self.wait_shutdown)

                self.exit_stack = stack.pop_all()
            return self

        def __exit__(self, *args: Any) -> None:
            self.exit_stack.close()

    return _HarnessTestClient


def HarnessTestClient(app: Callable[..., Any], portal: Any, options: ClientOptions) -> Any:
    """A Starlette ``TestClient`` on ``app`` bound to the harness loop's ``portal``.

    Entering it runs the app's lifespan; with ``pgharness_lifespan = off`` the caller does not
    enter it, and requests are served all the same.
    """
    return _test_client_class()(
        app, portal, base_url=options.base_url, headers=dict(options.headers)
    )
