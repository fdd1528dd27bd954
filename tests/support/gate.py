"""A provider that answers on cue: holds requests to one path until the test releases them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


class GatedTransport(httpx.AsyncBaseTransport):
    """Forwards to ``inner``; requests to ``path`` wait for ``release`` (after ``arrived``)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, path: str) -> None:
        self._inner = inner
        self._path = path
        self.waiting = 0
        self.arrived = asyncio.Condition()
        self.released = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self._path:
            async with self.arrived:
                self.waiting += 1
                self.arrived.notify_all()
            await self.released.wait()
        return await self._inner.handle_async_request(request)

    async def wait_for(self, count: int) -> None:
        """Until ``count`` requests are held (30 s at most: a test never hangs)."""
        async with asyncio.timeout(30), self.arrived:
            await self.arrived.wait_for(lambda: self.waiting >= count)


@contextmanager
def gated_provider(provider_key: str, path: str) -> Iterator[GatedTransport]:
    """Put a gate in front of ``provider_key``'s transport in the app, for the block's length."""
    from dashtam.main import app

    transports: dict[str, httpx.AsyncBaseTransport] = app.state.provider_transports
    inner = transports[provider_key]
    gate = GatedTransport(inner, path)
    transports[provider_key] = gate
    try:
        yield gate
    finally:
        gate.released.set()
        transports[provider_key] = inner
