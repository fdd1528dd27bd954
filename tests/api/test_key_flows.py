"""The key flows in the sync style: the sync twin of ``tests/api_async/test_key_flows.py``.

Same flows, same requests, same database checks, written as ``def`` tests with ``client``
(Starlette's ``TestClient`` on pgharness's loop thread) and ``db`` (a blocking session over the
app's transaction). Both styles of the same flows exist so that each style's cost can be
compared (``benchmarks/styles.py``). As in the async twin, what a request committed is visible
to ``db`` at once, and all of it is rolled back when the test ends.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from dashtam.models import (
    AuthRefreshToken,
    ConnectionStatus,
    Provider,
    ProviderConnection,
    ProviderToken,
    User,
)
from tests.support.accounts import Account, add_provider, connect, register_and_login
from tests.support.flows import PASSWORD

API = "/api/v1"


@dataclass
class Connected:
    account: Account
    provider_id: str


def _login(client: TestClient, email: str) -> dict[str, str]:
    response = client.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    tokens: dict[str, str] = response.json()
    return tokens


def _register_connect(client: TestClient) -> Connected:
    """The async twin's ``register_connect``: a new user, a sandbox provider, connected."""
    account = register_and_login(client)
    provider_id: str = add_provider(client, account, alias="Sandbox")["id"]
    assert connect(client, account, provider_id)["status"] == "active"
    return Connected(account, provider_id)


def test_register_then_login(client: TestClient, db: Any) -> None:
    registered = client.post(
        f"{API}/auth/register", json={"email": "Grace@Example.com", "password": PASSWORD}
    )
    assert registered.status_code == 201, registered.text

    user = db.scalar(select(User).where(User.email == "grace@example.com"))
    assert user is not None
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash

    tokens = _login(client, "grace@example.com")
    assert tokens["token_type"] == "bearer"
    me = client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == str(user.id)


def test_connect_and_callback_store_encrypted_tokens(client: TestClient, db: Any) -> None:
    connected = _register_connect(client)  # authorization, sandbox consent, callback

    connection = db.scalar(
        select(ProviderConnection).where(
            ProviderConnection.provider_id == uuid.UUID(connected.provider_id)
        )
    )
    assert connection is not None
    assert connection.status is ConnectionStatus.ACTIVE
    assert connection.connected_at is not None
    token = db.scalar(select(ProviderToken).where(ProviderToken.connection_id == connection.id))
    assert token is not None
    assert token.key_id == "test1"
    assert token.refresh_token_encrypted is not None

    status = client.get(
        f"{API}/providers/{connected.provider_id}/authorization",
        headers=connected.account.headers,
    )
    assert status.json()["status"] == "active"
    assert status.json()["needs_refresh"] is False


def test_refresh_rotates_the_login_and_the_provider_tokens(client: TestClient, db: Any) -> None:
    connected = _register_connect(client)
    first = _login(client, connected.account.email)

    rotated = client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["refresh_token"] != first["refresh_token"]
    with shifted(timedelta(seconds=get_settings().auth_refresh_retry_seconds + 1)):
        replay = client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401  # reuse revokes the whole family...
    revoked = db.scalar(
        select(func.count(AuthRefreshToken.id)).where(AuthRefreshToken.revoked_at.is_not(None))
    )
    assert revoked == 2  # ...the replayed token and its rotated descendant

    token_of = (
        select(ProviderToken.refresh_token_encrypted)
        .join(ProviderConnection, ProviderConnection.id == ProviderToken.connection_id)
        .where(ProviderConnection.provider_id == uuid.UUID(connected.provider_id))
    )
    before = db.scalar(token_of)
    refreshed = client.post(
        f"{API}/providers/{connected.provider_id}/token-refreshes",
        headers=connected.account.headers,
    )
    assert refreshed.status_code == 201, refreshed.text
    assert refreshed.json()["refresh_count"] == 1
    assert db.scalar(token_of) != before  # the provider's refresh token rotated


def test_disconnect_deletes_the_tokens(client: TestClient, db: Any) -> None:
    connected = _register_connect(client)
    url = f"{API}/providers/{connected.provider_id}/authorization"

    gone = client.delete(url, headers=connected.account.headers)
    assert gone.status_code == 204

    tokens = db.scalar(
        select(func.count(ProviderToken.id))
        .join(ProviderConnection, ProviderConnection.id == ProviderToken.connection_id)
        .where(ProviderConnection.provider_id == uuid.UUID(connected.provider_id))
    )
    assert tokens == 0
    status = client.get(url, headers=connected.account.headers).json()
    assert status["status"] == "revoked"
    assert status["expires_at"] is None


def test_another_users_provider_is_404(client: TestClient, db: Any) -> None:
    owner = _register_connect(client)
    stranger = _register_connect(client)
    theirs = f"{API}/providers/{owner.provider_id}"

    calls = [
        ("GET", theirs),
        ("PATCH", theirs),
        ("DELETE", theirs),
        ("GET", f"{theirs}/authorization"),
        ("POST", f"{theirs}/authorization"),
        ("DELETE", f"{theirs}/authorization"),
        ("POST", f"{theirs}/token-refreshes"),
        ("GET", f"{theirs}/audit-logs"),
    ]
    for method, url in calls:
        body = {"alias": "mine now"} if method == "PATCH" else None
        response = client.request(method, url, json=body, headers=stranger.account.headers)
        assert response.status_code == 404, (method, url, response.text)
        assert response.headers["content-type"] == "application/problem+json"

    provider = db.get(Provider, uuid.UUID(owner.provider_id))
    assert provider is not None
    assert provider.alias == "Sandbox"  # untouched by the stranger's PATCH and DELETE
