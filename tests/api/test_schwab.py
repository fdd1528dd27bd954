"""Schwab over ``httpx.MockTransport``: code exchange, rotation, failures and backoff."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from dashtam.models import ProviderConnection, ProviderToken
from tests.support.accounts import Account, add_provider


class FakeSchwab:
    """Schwab's token endpoint as the tests want it to behave."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.fail_with: str | None = None
        self.issued = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url == httpx.URL("https://api.schwabapi.com/v1/oauth/token")
        expected = base64.b64encode(b"schwab-test-client:schwab-test-secret").decode()
        assert request.headers["authorization"] == f"Basic {expected}"
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.requests.append(form)
        if self.fail_with:
            return httpx.Response(400, json={"error": self.fail_with, "error_description": "no"})
        self.issued += 1
        return httpx.Response(
            200,
            json={
                "access_token": f"schwab-access-{self.issued}",
                "refresh_token": f"schwab-refresh-{self.issued}",
                "token_type": "Bearer",
                "expires_in": 1800,
                "scope": "api",
            },
        )


@pytest.fixture
def schwab(schwab_transport: Callable[[httpx.MockTransport], None]) -> FakeSchwab:
    fake = FakeSchwab()
    schwab_transport(httpx.MockTransport(fake.handler))
    return fake


def _connect_schwab(client: TestClient, account: Account, schwab: FakeSchwab) -> str:
    pid: str = add_provider(client, account, key="schwab", alias="Schwab")["id"]
    start = client.post(f"/api/v1/providers/{pid}/authorization", headers=account.headers).json()
    parts = urlsplit(start["authorization_url"])
    query = parse_qs(parts.query)
    assert parts.netloc == "api.schwabapi.com"
    assert query["client_id"] == ["schwab-test-client"]
    assert "code_challenge" not in query
    # The browser would come back from Schwab to the redirect_uri with a code:
    callback = client.get(
        query["redirect_uri"][0], params={"code": "schwab-code", "state": start["state"]}
    )
    assert callback.status_code == 200, callback.text
    assert schwab.requests[-1] == {
        "grant_type": "authorization_code",
        "code": "schwab-code",
        "redirect_uri": query["redirect_uri"][0],
    }
    return pid


def _rewind_backoff(db: Any, pid: str) -> None:
    """Let the backoff elapse without waiting for it."""
    db.execute(
        update(ProviderConnection)
        .where(ProviderConnection.provider_id == uuid.UUID(pid))
        .values(next_retry_at=func.now() - timedelta(seconds=1))
    )
    db.commit()


# Rows are ordered by created_at = now(), the time their transaction began: each request
# needs a transaction of its own (as in production) for the order to be the request order.
@pytest.mark.pg_isolation("database")
def test_schwab_refresh_rotates_the_refresh_token(
    client: TestClient, account: Account, schwab: FakeSchwab
) -> None:
    pid = _connect_schwab(client, account, schwab)
    response = client.post(f"/api/v1/providers/{pid}/token-refreshes", headers=account.headers)
    assert response.status_code == 201
    assert schwab.requests[-1] == {
        "grant_type": "refresh_token",
        "refresh_token": "schwab-refresh-1",
    }
    client.post(f"/api/v1/providers/{pid}/token-refreshes", headers=account.headers)
    # The rotated token replaced the old one.
    assert schwab.requests[-1] == {
        "grant_type": "refresh_token",
        "refresh_token": "schwab-refresh-2",
    }
    logs = client.get(f"/api/v1/providers/{pid}/audit-logs", headers=account.headers).json()
    assert logs["items"][0]["details"]["rotated"] is True


def test_three_failures_put_the_connection_in_error_with_capped_backoff(
    client: TestClient, db: Any, account: Account, schwab: FakeSchwab
) -> None:
    pid = _connect_schwab(client, account, schwab)
    refresh_url = f"/api/v1/providers/{pid}/token-refreshes"
    schwab.fail_with = "invalid_grant"

    first = client.post(refresh_url, headers=account.headers)
    assert first.status_code == 502
    assert first.headers["content-type"] == "application/problem+json"
    assert first.json()["consecutive_failures"] == 1
    assert "schwab-refresh" not in first.text

    too_soon = client.post(refresh_url, headers=account.headers)
    assert too_soon.status_code == 429
    assert int(too_soon.headers["retry-after"]) > 60
    assert "retry_at" in too_soon.json()
    assert len(schwab.requests) == 2  # the refused attempt never reached Schwab

    statuses = []
    for _ in range(2):
        _rewind_backoff(db, pid)
        assert client.post(refresh_url, headers=account.headers).status_code == 502
        status = client.get(
            f"/api/v1/providers/{pid}/authorization", headers=account.headers
        ).json()
        statuses.append(status["status"])
    assert statuses == ["active", "error"]
    assert status["consecutive_failures"] == 3
    assert status["last_error"] == "refresh failed: invalid_grant"

    failures = [
        row["details"]
        for row in client.get(
            f"/api/v1/providers/{pid}/audit-logs", headers=account.headers
        ).json()["items"]
        if row["action"] == "refresh"
    ]
    assert [d["outcome"] for d in failures] == ["failure"] * 3

    schwab.fail_with = None
    _rewind_backoff(db, pid)
    recovered = client.post(refresh_url, headers=account.headers)
    assert recovered.status_code == 201
    body = recovered.json()
    assert body["status"] == "active"
    assert body["consecutive_failures"] == 0
    assert body["next_retry_at"] is None


# Rows are ordered by created_at = now(), the time their transaction began: each request
# needs a transaction of its own (as in production) for the order to be the request order.
@pytest.mark.pg_isolation("database")
def test_a_refused_code_exchange_is_502_and_audited(
    client: TestClient, account: Account, schwab: FakeSchwab
) -> None:
    schwab.fail_with = "invalid_grant"
    pid = add_provider(client, account, key="schwab", alias="Schwab")["id"]
    start = client.post(f"/api/v1/providers/{pid}/authorization", headers=account.headers).json()
    response = client.get(
        f"/api/v1/providers/{pid}/authorization/callback",
        params={"code": "bad", "state": start["state"]},
    )
    assert response.status_code == 502
    row = client.get(f"/api/v1/providers/{pid}/audit-logs", headers=account.headers).json()[
        "items"
    ][0]
    assert row["details"] == {"outcome": "failure", "error": "invalid_grant"}


def test_needs_refresh_when_the_token_expires_within_five_minutes(
    client: TestClient, db: Any, account: Account, schwab: FakeSchwab
) -> None:
    pid = _connect_schwab(client, account, schwab)
    url = f"/api/v1/providers/{pid}/authorization"
    assert client.get(url, headers=account.headers).json()["needs_refresh"] is False
    connection_id = select(ProviderConnection.id).where(
        ProviderConnection.provider_id == uuid.UUID(pid)
    )
    expiring = db.execute(
        update(ProviderToken)
        .where(ProviderToken.connection_id == connection_id.scalar_subquery())
        .values(expires_at=datetime.now(UTC) + timedelta(minutes=4))
    )
    assert expiring.rowcount == 1
    db.commit()
    assert client.get(url, headers=account.headers).json()["needs_refresh"] is True
