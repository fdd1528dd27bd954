"""Login attempts are throttled per account and per client address, with lockout and recovery."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from tests.support.accounts import register_and_login

LOGIN = "/api/v1/auth/login"


def _login(client: TestClient, email: str, password: str) -> int:
    return client.post(LOGIN, json={"email": email, "password": password}).status_code


def test_account_locks_after_failures_and_recovers_after_lockout(client: TestClient) -> None:
    settings = get_settings()
    account = register_and_login(client)
    for _ in range(settings.login_max_failures_per_account):
        assert _login(client, account.email, "wrong password!") == 401

    # Even the right password is refused while locked, as a problem with Retry-After.
    locked = client.post(LOGIN, json={"email": account.email, "password": account.password})
    assert locked.status_code == 429
    assert locked.headers["content-type"] == "application/problem+json"
    retry_after = int(locked.headers["retry-after"])
    assert 0 < retry_after <= settings.login_lockout_seconds + 1
    assert account.password not in locked.text

    # Another spelling of the same address is the same account.
    assert _login(client, f"  {account.email.upper()} ", account.password) == 429

    with shifted(timedelta(seconds=settings.login_lockout_seconds + 1)):
        assert _login(client, account.email, account.password) == 200
        # A success starts the account afresh: one more mistake does not lock it again.
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


def test_unknown_accounts_lock_too_so_lockout_reveals_nothing(client: TestClient) -> None:
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
    assert {(scope, failures) for scope, _, failures in rows} == {("account", 1), ("address", 1)}
    assert all(account.email not in key for _, key, _ in rows)
