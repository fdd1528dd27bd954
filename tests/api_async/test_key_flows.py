"""The key flows in the async style: ``async def`` tests, ``async_client`` and ``async_db``.

The requests and ``async_db`` share the test's transaction: what a request committed is
visible to ``async_db`` at once, and all of it is rolled back when the test ends.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

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
from tests.support.flows import PASSWORD, register_connect

API = "/api/v1"


async def _login(http: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await http.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    tokens: dict[str, str] = response.json()
    return tokens


async def test_register_then_login(async_client: httpx.AsyncClient, async_db: AsyncSession) -> None:
    registered = await async_client.post(
        f"{API}/auth/register", json={"email": "Grace@Example.com", "password": PASSWORD}
    )
    assert registered.status_code == 201, registered.text

    user = await async_db.scalar(select(User).where(User.email == "grace@example.com"))
    assert user is not None
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash

    tokens = await _login(async_client, "grace@example.com")
    assert tokens["token_type"] == "bearer"
    me = await async_client.get(
        f"{API}/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["id"] == str(user.id)


async def test_connect_and_callback_store_encrypted_tokens(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    connected = await register_connect(async_client)  # authorization, sandbox consent, callback

    connection = await async_db.scalar(
        select(ProviderConnection).where(
            ProviderConnection.provider_id == uuid.UUID(connected.provider_id)
        )
    )
    assert connection is not None
    assert connection.status is ConnectionStatus.ACTIVE
    assert connection.connected_at is not None
    token = await async_db.scalar(
        select(ProviderToken).where(ProviderToken.connection_id == connection.id)
    )
    assert token is not None
    assert token.key_id == "test1"
    assert token.refresh_token_encrypted is not None

    status = await async_client.get(
        f"{API}/providers/{connected.provider_id}/authorization", headers=connected.headers
    )
    assert status.json()["status"] == "active"
    assert status.json()["needs_refresh"] is False


async def test_refresh_rotates_the_login_and_the_provider_tokens(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    connected = await register_connect(async_client)
    first = await _login(async_client, connected.email)

    rotated = await async_client.post(
        f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["refresh_token"] != first["refresh_token"]
    with shifted(timedelta(seconds=get_settings().auth_refresh_retry_seconds + 1)):
        replay = await async_client.post(
            f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
    assert replay.status_code == 401  # reuse revokes the whole family...
    revoked = await async_db.scalar(
        select(func.count(AuthRefreshToken.id)).where(AuthRefreshToken.revoked_at.is_not(None))
    )
    assert revoked == 2  # ...the replayed token and its rotated descendant

    token_of = (
        select(ProviderToken.refresh_token_encrypted)
        .join(ProviderConnection, ProviderConnection.id == ProviderToken.connection_id)
        .where(ProviderConnection.provider_id == uuid.UUID(connected.provider_id))
    )
    before = await async_db.scalar(token_of)
    refreshed = await async_client.post(
        f"{API}/providers/{connected.provider_id}/token-refreshes", headers=connected.headers
    )
    assert refreshed.status_code == 201, refreshed.text
    assert refreshed.json()["refresh_count"] == 1
    assert await async_db.scalar(token_of) != before  # the provider's refresh token rotated


async def test_disconnect_deletes_the_tokens(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    connected = await register_connect(async_client)
    url = f"{API}/providers/{connected.provider_id}/authorization"

    gone = await async_client.delete(url, headers=connected.headers)
    assert gone.status_code == 204

    tokens = await async_db.scalar(
        select(func.count(ProviderToken.id))
        .join(ProviderConnection, ProviderConnection.id == ProviderToken.connection_id)
        .where(ProviderConnection.provider_id == uuid.UUID(connected.provider_id))
    )
    assert tokens == 0
    status = (await async_client.get(url, headers=connected.headers)).json()
    assert status["status"] == "revoked"
    assert status["expires_at"] is None


async def test_another_users_provider_is_404(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    owner = await register_connect(async_client)
    stranger = await register_connect(async_client)
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
        response = await async_client.request(method, url, json=body, headers=stranger.headers)
        assert response.status_code == 404, (method, url, response.text)
        assert response.headers["content-type"] == "application/problem+json"

    provider = await async_db.get(Provider, uuid.UUID(owner.provider_id))
    assert provider is not None
    assert provider.alias == "Sandbox"  # untouched by the stranger's PATCH and DELETE
