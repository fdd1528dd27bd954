"""Account lifecycle: logout, the session list, ending a session, changing the password.

A session is one login (one refresh-token family); ending it refuses its access tokens at
once, not when they expire.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from dashtam.models import AuditLog
from tests.support.accounts import Account, register_and_login
from tests.support.flows import PASSWORD

API = "/api/v1/auth"
PROBLEM = "application/problem+json"


def _login(client: TestClient, email: str, password: str = PASSWORD, agent: str = "") -> Account:
    headers = {"User-Agent": agent} if agent else {}
    response = client.post(
        f"{API}/login", json={"email": email, "password": password}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Account(email, password, body["access_token"], body["refresh_token"])


def _me(client: TestClient, account: Account) -> int:
    return client.get(f"{API}/me", headers=account.headers).status_code


def _refresh(client: TestClient, account: Account) -> int:
    return client.post(f"{API}/refresh", json={"refresh_token": account.refresh_token}).status_code


def test_logout_ends_this_session_at_once_and_no_other(client: TestClient) -> None:
    account = register_and_login(client)
    other = _login(client, account.email)

    assert client.post(f"{API}/logout", headers=account.headers).status_code == 204

    revoked = client.get(f"{API}/me", headers=account.headers)
    assert revoked.status_code == 401
    assert revoked.headers["content-type"] == PROBLEM
    assert "has ended" in revoked.json()["detail"]
    assert _refresh(client, account) == 401
    assert client.post(f"{API}/logout", headers=account.headers).status_code == 401
    assert (_me(client, other), _refresh(client, other)) == (200, 200)


def test_sessions_are_listed_and_one_can_be_ended(client: TestClient) -> None:
    account = register_and_login(client)
    phone = _login(client, account.email, agent="Dashtam iOS/1.0")
    stranger = register_and_login(client)

    listed = client.get(f"{API}/sessions", headers=account.headers)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert len(items) == 2
    assert [item["current"] for item in items].count(True) == 1
    phone_session = next(item for item in items if item["client"] == "Dashtam iOS/1.0")
    assert not phone_session["current"]
    assert {"id", "created_at", "last_used_at", "client", "ip_address"} <= set(phone_session)

    # Someone else's session, or one that does not exist, is 404.
    theirs = client.get(f"{API}/sessions", headers=stranger.headers).json()["items"][0]["id"]
    assert client.delete(f"{API}/sessions/{theirs}", headers=account.headers).status_code == 404
    assert _me(client, stranger) == 200

    ended = client.delete(f"{API}/sessions/{phone_session['id']}", headers=account.headers)
    assert ended.status_code == 204
    assert (_me(client, phone), _refresh(client, phone)) == (401, 401)
    remaining = client.get(f"{API}/sessions", headers=account.headers).json()["items"]
    assert [item["current"] for item in remaining] == [True]
    again = client.delete(f"{API}/sessions/{phone_session['id']}", headers=account.headers)
    assert again.status_code == 404


def test_a_refresh_updates_last_used(client: TestClient) -> None:
    account = register_and_login(client)
    before = client.get(f"{API}/sessions", headers=account.headers).json()["items"][0]
    with shifted(timedelta(minutes=5)):
        assert _refresh(client, account) == 200
    after = client.get(f"{API}/sessions", headers=account.headers).json()["items"][0]
    assert after["id"] == before["id"]
    assert after["last_used_at"] > before["last_used_at"]


def test_changing_the_password_ends_every_other_session(client: TestClient) -> None:
    account = register_and_login(client)
    other = _login(client, account.email)
    new_password = "a brand new passphrase"

    wrong = client.post(
        f"{API}/password",
        json={"current_password": "not my password", "new_password": new_password},
        headers=account.headers,
    )
    assert wrong.status_code == 403
    assert wrong.headers["content-type"] == PROBLEM
    assert _me(client, other) == 200

    changed = client.post(
        f"{API}/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=account.headers,
    )
    assert changed.status_code == 204
    assert (_me(client, other), _refresh(client, other)) == (401, 401)
    assert _me(client, account) == 200  # this session goes on
    refused = client.post(f"{API}/login", json={"email": account.email, "password": PASSWORD})
    assert refused.status_code == 401
    _login(client, account.email, new_password)


def test_a_too_short_new_password_is_422(client: TestClient) -> None:
    account = register_and_login(client)
    response = client.post(
        f"{API}/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=account.headers,
    )
    assert response.status_code == 422
    assert PASSWORD not in response.text


def test_account_events_are_audited(client: TestClient, db: Any) -> None:
    account = register_and_login(client)
    assert (
        client.post(
            f"{API}/login", json={"email": account.email, "password": "wrong password"}
        ).status_code
        == 401
    )
    assert _refresh(client, account) == 200
    with shifted(timedelta(seconds=get_settings().auth_refresh_retry_seconds + 1)):
        assert _refresh(client, account) == 401  # a reused refresh token
    second = _login(client, account.email)
    client.post(
        f"{API}/password",
        json={"current_password": PASSWORD, "new_password": "another good one"},
        headers=second.headers,
    )
    assert client.post(f"{API}/logout", headers=second.headers).status_code == 204

    actions = db.scalars(select(AuditLog.action).order_by(AuditLog.created_at, AuditLog.id)).all()
    assert set(actions) >= {
        "register",
        "login",
        "login_failed",
        "refresh_token_reuse",
        "password_change",
        "logout",
    }
    rows = db.scalars(select(AuditLog)).all()
    assert all(account.email not in str(row.details) for row in rows)
    assert all(PASSWORD not in str(row.details) for row in rows)


def test_listing_sessions_costs_one_query(client: TestClient, pg_queries: Any) -> None:
    account = register_and_login(client)

    with pg_queries.at_most(1):
        listed = client.get(f"{API}/sessions", headers=account.headers)

    assert [item["current"] for item in listed.json()["items"]] == [True]
