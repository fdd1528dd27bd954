"""Async API helpers over ``httpx.AsyncClient``: a user with a connected sandbox provider."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "correct horse battery staple"


@dataclass
class Connected:
    email: str
    headers: dict[str, str]
    provider_id: str


async def register_connect(http: httpx.AsyncClient) -> Connected:
    """A new user with a sandbox provider connected through the sandbox's OAuth flow."""
    email = f"user-{secrets.token_hex(4)}@example.com"
    credentials = {"email": email, "password": PASSWORD}
    assert (await http.post("/api/v1/auth/register", json=credentials)).status_code == 201
    login = await http.post("/api/v1/auth/login", json=credentials)
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    created = await http.post(
        "/api/v1/providers", json={"provider_key": "sandbox", "alias": "Sandbox"}, headers=headers
    )
    assert created.status_code == 201, created.text
    provider_id: str = created.json()["id"]
    start = await http.post(f"/api/v1/providers/{provider_id}/authorization", headers=headers)
    assert start.status_code == 201, start.text
    callback = await http.get(start.json()["authorization_url"], follow_redirects=True)
    assert callback.status_code == 200, callback.text
    assert callback.json()["status"] == "active"
    return Connected(email, headers, provider_id)


def json_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    return body
