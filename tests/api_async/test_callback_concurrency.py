"""The callback locks the connection after the code exchange, as refresh and disconnect do.

The provider's token endpoint is held (a gate in front of the sandbox) while the other request
runs, so the overlap is certain, not a matter of timing.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import pytest

from dashtam.main import app
from tests.support.database import raw_connection
from tests.support.flows import PASSWORD, register_connect
from tests.support.gate import gated_provider

TOKEN_PATH = "/sandbox/oauth/token"


def _client() -> httpx.AsyncClient:
    # A client of its own per request: its own session and connection, really concurrent.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def _new_provider(http: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    credentials = {"email": f"user-{secrets.token_hex(4)}@example.com", "password": PASSWORD}
    assert (await http.post("/api/v1/auth/register", json=credentials)).status_code == 201
    login = await http.post("/api/v1/auth/login", json=credentials)
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    created = await http.post(
        "/api/v1/providers", json={"provider_key": "sandbox", "alias": "Sandbox"}, headers=headers
    )
    return headers, created.json()["id"]


async def _callback_location(
    http: httpx.AsyncClient, headers: dict[str, str], provider_id: str
) -> str:
    """Start an authorization and let the sandbox approve it: the callback URL with its code."""
    start = await http.post(f"/api/v1/providers/{provider_id}/authorization", headers=headers)
    assert start.status_code == 201, start.text
    approved = await http.get(start.json()["authorization_url"])
    assert approved.status_code == 302, approved.text
    return approved.headers["location"]


async def _callback(location: str) -> httpx.Response:
    async with _client() as http:
        return await http.get(location)


async def _disconnect(headers: dict[str, str], provider_id: str) -> httpx.Response:
    async with _client() as http:
        return await http.delete(f"/api/v1/providers/{provider_id}/authorization", headers=headers)


def _stored(pg_database: Any, provider_id: str) -> tuple[str, int, int]:
    with raw_connection(pg_database) as conn:
        row = conn.execute(
            "SELECT c.status::text, (SELECT count(*) FROM provider_tokens t"
            " WHERE t.connection_id = c.id),"
            " (SELECT count(*) FROM sandbox_refresh_tokens WHERE revoked_at IS NULL)"
            " FROM provider_connections c WHERE c.provider_id = %s",
            (provider_id,),
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


@pytest.mark.pg_isolation("database")
async def test_a_disconnect_during_the_code_exchange_is_not_undone(
    async_client: httpx.AsyncClient, pg_database: Any
) -> None:
    headers, provider_id = await _new_provider(async_client)
    location = await _callback_location(async_client, headers, provider_id)

    with gated_provider("sandbox", TOKEN_PATH) as gate:
        callback = asyncio.create_task(_callback(location))
        await gate.wait_for(1)
        disconnected = await asyncio.wait_for(_disconnect(headers, provider_id), 30)
        gate.released.set()
        response = await asyncio.wait_for(callback, 30)

    assert disconnected.status_code == 204, disconnected.text
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "disconnected" in response.json()["detail"]
    # Revoked, no tokens, and the grant the exchange obtained was revoked at the provider.
    assert _stored(pg_database, provider_id) == ("revoked", 0, 0)


@pytest.mark.pg_isolation("database")
async def test_reauthorizing_and_disconnecting_at_once_ends_revoked_without_500(
    async_client: httpx.AsyncClient, pg_database: Any
) -> None:
    connected = await register_connect(async_client)
    location = await _callback_location(async_client, connected.headers, connected.provider_id)

    with gated_provider("sandbox", TOKEN_PATH) as gate:
        callback = asyncio.create_task(_callback(location))
        await gate.wait_for(1)
        disconnected = await asyncio.wait_for(
            _disconnect(connected.headers, connected.provider_id), 30
        )
        gate.released.set()
        response = await asyncio.wait_for(callback, 30)

    assert disconnected.status_code == 204, disconnected.text
    assert response.status_code == 409, response.text
    # Both grants (the first connection's and the re-authorization's) are revoked upstream.
    assert _stored(pg_database, connected.provider_id) == ("revoked", 0, 0)


@pytest.mark.pg_isolation("database")
async def test_two_callbacks_at_once_both_succeed_and_leave_one_token_row(
    async_client: httpx.AsyncClient, pg_database: Any
) -> None:
    headers, provider_id = await _new_provider(async_client)
    first = await _callback_location(async_client, headers, provider_id)
    second = await _callback_location(async_client, headers, provider_id)

    with gated_provider("sandbox", TOKEN_PATH) as gate:
        callbacks = [asyncio.create_task(_callback(url)) for url in (first, second)]
        await gate.wait_for(2)
        gate.released.set()
        responses = await asyncio.wait_for(asyncio.gather(*callbacks), 30)

    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    status, token_rows, _ = _stored(pg_database, provider_id)
    assert (status, token_rows) == ("active", 1)
    refreshed = await async_client.post(
        f"/api/v1/providers/{provider_id}/token-refreshes", headers=headers
    )
    assert refreshed.status_code == 201, refreshed.text
