"""Sync API helpers over ``TestClient``: users with tokens, providers, a connected sandbox."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from tests.support.flows import PASSWORD


@dataclass
class Account:
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def register_and_login(client: TestClient, email: str | None = None) -> Account:
    email = email or f"user-{secrets.token_hex(4)}@example.com"
    response = client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    response = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    return Account(email, PASSWORD, body["access_token"], body["refresh_token"])


def add_provider(
    client: TestClient, account: Account, key: str = "sandbox", alias: str = "My sandbox"
) -> dict[str, Any]:
    response = client.post(
        "/api/v1/providers", json={"provider_key": key, "alias": alias}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def connect(client: TestClient, account: Account, provider_id: str) -> dict[str, Any]:
    """Start authorization and follow the URL like a browser would, to the callback."""
    response = client.post(
        f"/api/v1/providers/{provider_id}/authorization", headers=account.headers
    )
    assert response.status_code == 201, response.text
    callback = client.get(response.json()["authorization_url"], follow_redirects=True)
    assert callback.status_code == 200, callback.text
    body: dict[str, Any] = callback.json()
    return body
