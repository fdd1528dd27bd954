"""argon2 runs off the event loop: the process keeps answering during a registration burst."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from dashtam.core import security
from dashtam.core.config import get_settings
from dashtam.main import app
from tests.support.flows import PASSWORD

BURST = 4


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.mark.pg_isolation("database")
async def test_liveness_answers_promptly_while_passwords_hash(
    async_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A production-like cost, so that one hash takes long enough to notice on the loop.
    settings = get_settings()
    monkeypatch.setattr(settings, "password_hash_time_cost", 3)
    monkeypatch.setattr(settings, "password_hash_memory_kib", 65_536)
    started = time.perf_counter()
    await security.hash_password("warm up the hasher")
    one_hash = time.perf_counter() - started

    async def register(number: int) -> int:
        body = {"email": f"burst-{number}@example.com", "password": PASSWORD}
        async with _client() as http:
            return (await http.post("/api/v1/auth/register", json=body)).status_code

    probes: list[float] = []

    async def probe_until(done: asyncio.Future[list[int]]) -> None:
        async with _client() as http:
            while not done.done():
                sent = time.perf_counter()
                assert (await http.get("/health/live")).status_code == 200
                probes.append(time.perf_counter() - sent)
                await asyncio.sleep(0.005)

    burst = asyncio.ensure_future(asyncio.gather(*(register(n) for n in range(BURST))))
    await asyncio.wait_for(asyncio.gather(burst, probe_until(burst)), 120)

    assert burst.result() == [201] * BURST
    assert len(probes) >= 5
    # On the loop, a probe would wait for whole hashes; off it, for a small part of one.
    assert max(probes) < one_hash / 2, (max(probes), one_hash)
