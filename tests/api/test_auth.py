"""Accounts: register, login, me, rotating refresh tokens with reuse detection."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from tests.support.accounts import Account, register_and_login

PROBLEM = "application/problem+json"


def test_register_returns_the_user_without_secrets(client: TestClient) -> None:
    response = client.post(
        "/api/v1/auth/register",
        json={"email": "Ada@Example.com", "password": "a long enough password", "name": "Ada"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada"
    assert "password" not in response.text
    assert "password_hash" not in body


def test_registering_an_email_twice_is_a_conflict(client: TestClient, account: Account) -> None:
    response = client.post(
        "/api/v1/auth/register",
        json={"email": account.email.upper(), "password": "another password"},
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 409


def test_login_returns_a_bearer_pair(client: TestClient, account: Account) -> None:
    response = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": account.password}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0


def test_wrong_password_and_unknown_email_are_the_same_401(
    client: TestClient, account: Account
) -> None:
    wrong = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": "nope-nope"}
    )
    unknown = client.post(
        "/api/v1/auth/login", json={"email": "x@example.com", "password": "nope-nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.headers["content-type"] == PROBLEM
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert "nope-nope" not in wrong.text


def test_me_needs_a_valid_access_token(client: TestClient, account: Account) -> None:
    assert client.get("/api/v1/auth/me", headers=account.headers).json()["email"] == account.email
    missing = client.get("/api/v1/auth/me")
    forged = client.get("/api/v1/auth/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert missing.status_code == forged.status_code == 401
    assert missing.headers["content-type"] == PROBLEM
    assert missing.headers["www-authenticate"] == "Bearer"


def test_refresh_rotates_the_refresh_token(client: TestClient, account: Account) -> None:
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert response.status_code == 200
    pair = response.json()
    assert pair["refresh_token"] != account.refresh_token
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 200


def test_reusing_a_refresh_token_is_401_and_revokes_its_family(client: TestClient) -> None:
    account = register_and_login(client)
    other_login = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": account.password}
    ).json()
    first = client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    newest = first.json()["refresh_token"]

    # Sent twice at once (a flaky network retrying): 409, and the session lives on.
    retried = client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert retried.status_code == 409
    assert retried.headers["content-type"] == PROBLEM
    assert "use the tokens that request returned" in retried.json()["detail"]

    with shifted(timedelta(seconds=get_settings().auth_refresh_retry_seconds + 1)):
        replay = client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert replay.status_code == 401
    assert replay.headers["content-type"] == PROBLEM

    # The thief's replay also cut off the rotated descendant...
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": newest}).status_code == 401
    # ...but not a separate login's family.
    separate = client.post(
        "/api/v1/auth/refresh", json={"refresh_token": other_login["refresh_token"]}
    )
    assert separate.status_code == 200


def test_unknown_refresh_token_is_401(client: TestClient) -> None:
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": "made-up"})
    assert response.status_code == 401


def test_invalid_registration_names_the_fields_and_hides_the_password(client: TestClient) -> None:
    response = client.post(
        "/api/v1/auth/register", json={"email": "not-an-email", "password": "s3cr3t"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    fields = {tuple(error["loc"]) for error in response.json()["errors"]}
    assert fields == {("body", "email"), ("body", "password")}
    assert "s3cr3t" not in response.text


def test_me_costs_one_query(client: TestClient, account: Account, pg_queries: Any) -> None:
    with pg_queries.at_most(1):  # the user and the token's session, joined
        me = client.get("/api/v1/auth/me", headers=account.headers)

    assert me.json()["email"] == account.email
