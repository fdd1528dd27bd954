"""Logout and password change, async style: a revoked access token is 401 immediately."""

from __future__ import annotations

import httpx

from tests.support.flows import PASSWORD, register_connect


async def test_logout_refuses_the_access_token_at_once(async_client: httpx.AsyncClient) -> None:
    connected = await register_connect(async_client)
    providers = f"/api/v1/providers/{connected.provider_id}"
    assert (await async_client.get(providers, headers=connected.headers)).status_code == 200

    logout = await async_client.post("/api/v1/auth/logout", headers=connected.headers)

    assert logout.status_code == 204
    refused = await async_client.get(providers, headers=connected.headers)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"


async def test_password_change_keeps_the_current_session(async_client: httpx.AsyncClient) -> None:
    connected = await register_connect(async_client)
    credentials = {"email": connected.email, "password": PASSWORD}
    other = (await async_client.post("/api/v1/auth/login", json=credentials)).json()
    other_headers = {"Authorization": f"Bearer {other['access_token']}"}

    changed = await async_client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        headers=connected.headers,
    )

    assert changed.status_code == 204
    assert (await async_client.get("/api/v1/auth/me", headers=other_headers)).status_code == 401
    sessions = await async_client.get("/api/v1/auth/sessions", headers=connected.headers)
    assert [item["current"] for item in sessions.json()["items"]] == [True]
