"""The authorization round trip's guards: signed single-use state, denial, audit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dashtam.core.clock import utcnow
from dashtam.core.config import get_settings
from dashtam.core.security import sign_value
from dashtam.models import SandboxRefreshToken
from dashtam.services.authorization import STATE_AUDIENCE
from tests.support.accounts import Account, add_provider, connect


def _tampered(state: str) -> str:
    """``state`` with one signature character changed. A middle one: the last character of a
    base64 signature carries padding bits, so changing it can leave the signature intact."""
    at = len(state) - 10
    return state[:at] + ("B" if state[at] == "A" else "A") + state[at + 1 :]


def _start(client: TestClient, account: Account, pid: str) -> tuple[str, str]:
    response = client.post(f"/api/v1/providers/{pid}/authorization", headers=account.headers)
    assert response.status_code == 201
    body = response.json()
    return body["authorization_url"], body["state"]


def test_authorization_url_carries_state_and_pkce(client: TestClient, account: Account) -> None:
    pid = add_provider(client, account)["id"]
    url, state = _start(client, account, pid)
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path == "/sandbox/oauth/authorize"
    assert query["state"] == [state]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert query["redirect_uri"][0].endswith(f"/api/v1/providers/{pid}/authorization/callback")
    status = client.get(f"/api/v1/providers/{pid}/authorization", headers=account.headers)
    assert status.json()["status"] == "pending"


def test_a_state_works_once(client: TestClient, account: Account) -> None:
    pid = add_provider(client, account)["id"]
    url, _ = _start(client, account, pid)
    redirect = client.get(url, follow_redirects=False)
    assert redirect.status_code == 302
    callback_url = redirect.headers["location"]
    assert client.get(callback_url).status_code == 200
    replay = client.get(callback_url)
    assert replay.status_code == 409
    assert replay.headers["content-type"] == "application/problem+json"


def test_tampered_or_expired_state_is_rejected(client: TestClient, account: Account) -> None:
    pid = add_provider(client, account)["id"]
    _, state = _start(client, account, pid)
    callback = f"/api/v1/providers/{pid}/authorization/callback"
    tampered = client.get(callback, params={"code": "x", "state": _tampered(state)})
    assert tampered.status_code == 400
    expired_state = sign_value(
        {"sid": "00000000-0000-0000-0000-000000000000", "uid": "x", "pid": pid},
        secret=get_settings().signing_key,
        audience=STATE_AUDIENCE,
        expires_at=utcnow() - timedelta(seconds=1),
    )
    expired = client.get(callback, params={"code": "x", "state": expired_state})
    assert expired.status_code == 400
    assert "expired" in expired.json()["detail"]


def test_state_of_one_provider_does_not_complete_another(
    client: TestClient, account: Account
) -> None:
    first = add_provider(client, account, alias="one")["id"]
    second = add_provider(client, account, alias="two")["id"]
    _, state = _start(client, account, first)
    response = client.get(
        f"/api/v1/providers/{second}/authorization/callback", params={"code": "x", "state": state}
    )
    assert response.status_code == 400


# Rows are ordered by created_at = now(), the time their transaction began: each request
# needs a transaction of its own (as in production) for the order to be the request order.
@pytest.mark.pg_isolation("database")
def test_denied_consent_is_a_failed_callback_in_the_audit_log(
    client: TestClient, account: Account
) -> None:
    pid = add_provider(client, account)["id"]
    url, _ = _start(client, account, pid)
    response = client.get(url + "&decision=deny", follow_redirects=True)
    assert response.status_code == 400
    assert "access_denied" in response.json()["detail"]
    logs = client.get(f"/api/v1/providers/{pid}/audit-logs", headers=account.headers).json()
    newest = logs["items"][0]
    assert newest["action"] == "callback"
    assert newest["details"] == {"outcome": "failure", "error": "access_denied"}
    status = client.get(f"/api/v1/providers/{pid}/authorization", headers=account.headers).json()
    assert status["status"] == "error"


def test_refresh_before_connecting_is_a_conflict(client: TestClient, account: Account) -> None:
    pid = add_provider(client, account)["id"]
    response = client.post(f"/api/v1/providers/{pid}/token-refreshes", headers=account.headers)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"


def test_reconnecting_after_disconnect_works(client: TestClient, account: Account) -> None:
    pid = add_provider(client, account)["id"]
    connect(client, account, pid)
    assert (
        client.delete(f"/api/v1/providers/{pid}/authorization", headers=account.headers).status_code
        == 204
    )
    refresh = client.post(f"/api/v1/providers/{pid}/token-refreshes", headers=account.headers)
    assert refresh.status_code == 409
    assert connect(client, account, pid)["status"] == "active"


def test_disconnect_revokes_the_grant_at_the_provider(
    client: TestClient, account: Account, db: Any
) -> None:
    pid = add_provider(client, account)["id"]
    connect(client, account, pid)
    live = select(func.count(SandboxRefreshToken.id)).where(
        SandboxRefreshToken.revoked_at.is_(None)
    )
    assert db.scalar(live) == 1

    client.delete(f"/api/v1/providers/{pid}/authorization", headers=account.headers)

    # RFC 7009: the sandbox was asked to revoke the refresh token Dashtam no longer keeps.
    assert db.scalar(live) == 0


def test_audit_rows_record_ip_and_user_agent(client: TestClient, account: Account) -> None:
    pid = add_provider(client, account)["id"]
    client.post(
        f"/api/v1/providers/{pid}/authorization",
        headers={**account.headers, "User-Agent": "dashtam-tests/1.0"},
    )
    row = client.get(f"/api/v1/providers/{pid}/audit-logs", headers=account.headers).json()[
        "items"
    ][0]
    assert row["action"] == "connect"
    assert row["user_agent"] == "dashtam-tests/1.0"
    assert row["ip_address"]


def test_connection_status_costs_one_query(
    client: TestClient, account: Account, pg_queries: Any
) -> None:
    provider = add_provider(client, account)
    connect(client, account, provider["id"])

    # The provider's connection and token joined, through the caller's open session.
    with pg_queries.at_most(1):
        status = client.get(
            f"/api/v1/providers/{provider['id']}/authorization", headers=account.headers
        )

    assert status.json()["status"] == "active"
