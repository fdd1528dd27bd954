"""Concurrent refreshes of one connection run one after another: no rotation is lost."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from dashtam.core.config import get_settings
from dashtam.main import app
from tests.support.database import raw_connection
from tests.support.flows import Connected, register_connect

CONCURRENT = 5


@pytest.mark.pg_isolation("database")
async def test_concurrent_refreshes_each_rotate_and_none_is_lost(
    async_client: httpx.AsyncClient, pg_database: Any
) -> None:
    connected = await register_connect(async_client)
    url = f"/api/v1/providers/{connected.provider_id}/token-refreshes"

    async def refresh() -> httpx.Response:
        # A client of its own per request: its own session and connection, really concurrent.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await http.post(url, headers=connected.headers)

    responses = await asyncio.wait_for(
        asyncio.gather(*(refresh() for _ in range(CONCURRENT))), timeout=60
    )

    assert [r.status_code for r in responses] == [201] * CONCURRENT, [r.text for r in responses]
    assert sorted(r.json()["refresh_count"] for r in responses) == list(range(1, CONCURRENT + 1))
    # The stored refresh token is the newest one the sandbox issued: refreshing still works.
    after = await async_client.post(url, headers=connected.headers)
    assert after.status_code == 201, after.text
    assert after.json()["refresh_count"] == CONCURRENT + 1
    with raw_connection(pg_database) as conn:
        audited = conn.execute(
            "SELECT count(*) FROM audit_logs WHERE provider_id = %s AND action = 'refresh'"
            " AND details->>'outcome' = 'success'",
            (connected.provider_id,),
        ).fetchone()
        revoked = conn.execute(
            "SELECT count(*) FROM sandbox_refresh_tokens WHERE revoked_at IS NOT NULL"
        ).fetchone()
    assert audited == (CONCURRENT + 1,)
    assert revoked == (0,)  # no refresh token was ever presented twice


@pytest.mark.pg_isolation("database")
async def test_more_concurrent_refreshes_than_pooled_connections_all_succeed(
    async_client: httpx.AsyncClient,
) -> None:
    # Each refresh holds a connection while the in-process sandbox needs another one: with
    # more refreshes than the pool holds, they must not all wait for each other.
    settings = get_settings()
    count = settings.pool_size + settings.pool_overflow + 5
    connected = [await register_connect(async_client) for _ in range(count)]

    async def refresh(user: Connected) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await http.post(
                f"/api/v1/providers/{user.provider_id}/token-refreshes", headers=user.headers
            )

    responses = await asyncio.wait_for(
        asyncio.gather(*(refresh(user) for user in connected)),
        timeout=settings.db_pool_timeout * 3,
    )
    assert [r.status_code for r in responses] == [201] * count, {r.text for r in responses}
