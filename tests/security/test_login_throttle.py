"""Login attempts are throttled per account (short delays) and per client address (blocks)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from dashtam.main import app
from tests.support.accounts import register_and_login
from tests.support.flows import PASSWORD

LOGIN = "/api/v1/auth/login"


def _login(client: TestClient, email: str, password: str) -> int:
    return client.post(LOGIN, json={"email": email, "password": password}).status_code


def test_account_failures_slow_the_next_attempt_for_a_minute_at_most(client: TestClient) -> None:
    settings = get_settings()
    account = register_and_login(client)
    for _ in range(settings.login_max_failures_per_account):
        assert _login(client, account.email, "wrong password!") == 401

    # Past the free attempts the account waits a delay, as a problem with Retry-After.
    delayed = client.post(LOGIN, json={"email": account.email, "password": account.password})
    assert delayed.status_code == 429
    assert delayed.headers["content-type"] == "application/problem+json"
    assert 0 < int(delayed.headers["retry-after"]) <= 60
    assert account.password not in delayed.text
    # Another spelling of the same address is the same account.
    assert _login(client, f"  {account.email.upper()} ", account.password) == 429

    # Each further failure doubles the delay, which never exceeds 60 s: an attacker who keeps
    # guessing is slowed down, the owner is never locked out for long.
    waited = timedelta(0)
    delays = []
    for _ in range(10):
        waited += timedelta(seconds=61)
        with shifted(waited):
            assert _login(client, account.email, "wrong password!") == 401
            refused = client.post(LOGIN, json={"email": account.email, "password": "x" * 9})
            assert refused.status_code == 429
            delays.append(int(refused.headers["retry-after"]))
    assert delays == sorted(delays)
    assert delays[0] < delays[-1]
    assert max(delays) == settings.login_max_delay_seconds == 60

    with shifted(waited + timedelta(seconds=61)):
        assert _login(client, account.email, account.password) == 200
        # A success starts the account afresh: one more mistake does not delay it again.
        assert _login(client, account.email, "wrong password!") == 401
        assert _login(client, account.email, account.password) == 200


def test_failures_spread_over_accounts_lock_the_address(client: TestClient) -> None:
    settings = get_settings()
    victim = register_and_login(client)
    for number in range(settings.login_max_failures_per_address):
        assert _login(client, f"guess-{number}@example.com", "wrong password!") == 401

    # The next login from this address is refused, even for an untouched account.
    response = client.post(LOGIN, json={"email": victim.email, "password": victim.password})
    assert response.status_code == 429
    assert "retry-after" in response.headers

    with shifted(timedelta(seconds=settings.login_lockout_seconds + 1)):
        assert _login(client, victim.email, victim.password) == 200


def test_unknown_accounts_are_delayed_too_so_the_delay_reveals_nothing(
    client: TestClient,
) -> None:
    settings = get_settings()
    for _ in range(settings.login_max_failures_per_account):
        assert _login(client, "nobody@example.com", "wrong password!") == 401
    assert _login(client, "nobody@example.com", "wrong password!") == 429


@pytest.mark.pg_isolation("database")
def test_counters_live_in_postgres_without_emails_in_clear(
    client: TestClient, pg_database: Any
) -> None:
    account = register_and_login(client)
    assert _login(client, account.email, "wrong password!") == 401
    with psycopg.connect(
        pg_database.sync_url.replace("postgresql+psycopg://", "postgresql://", 1)
    ) as conn:
        rows = conn.execute("SELECT scope, key, failures FROM login_throttles").fetchall()
    assert {(scope, failures) for scope, _, failures in rows} == {
        ("account", 1),
        ("address", 1),
        ("register", 1),
    }
    assert all(account.email not in key for _, key, _ in rows)


@pytest.mark.pg_isolation("database")
async def test_simultaneous_guesses_are_counted_before_any_is_checked(
    async_client: httpx.AsyncClient,
) -> None:
    settings = get_settings()
    credentials = {"email": "target@example.com", "password": PASSWORD}
    assert (await async_client.post("/api/v1/auth/register", json=credentials)).status_code == 201
    guess = {"email": "target@example.com", "password": "wrong password!"}

    async def attempt() -> int:
        # A client of its own per request: its own session and connection, really concurrent.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return (await http.post(LOGIN, json=guess)).status_code

    statuses = await asyncio.wait_for(asyncio.gather(*(attempt() for _ in range(12))), 60)

    checked = statuses.count(401)
    assert 1 <= checked <= settings.login_max_failures_per_account, statuses
    assert statuses.count(429) == 12 - checked, statuses


def test_registration_is_limited_per_address(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "register_max_per_address", 2)
    for number in range(2):
        body = {"email": f"new-{number}@example.com", "password": PASSWORD}
        assert client.post("/api/v1/auth/register", json=body).status_code == 201
    refused = client.post(
        "/api/v1/auth/register", json={"email": "new-3@example.com", "password": PASSWORD}
    )
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 0 < int(refused.headers["retry-after"]) <= get_settings().register_window_seconds + 1


def test_login_refresh_is_limited_per_address(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = register_and_login(client)
    monkeypatch.setattr(get_settings(), "auth_refresh_max_per_address", 1)
    first = client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert first.status_code == 200, first.text
    second = client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first.json()["refresh_token"]}
    )
    assert second.status_code == 429
    assert "retry-after" in second.headers
