"""The whole sandbox journey through the HTTP API: connect, refresh, rotate, disconnect."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.accounts import Account, add_provider, connect


# Rows are ordered by created_at = now(), the time their transaction began: each request
# needs a transaction of its own (as in production) for the order to be the request order.
@pytest.mark.pg_isolation("database")
def test_connect_refresh_disconnect_with_the_sandbox(client: TestClient, account: Account) -> None:
    provider = add_provider(client, account)
    pid = provider["id"]

    connected = connect(client, account, pid)
    assert connected["status"] == "active"
    assert connected["expires_at"] is not None
    assert connected["refresh_count"] == 0

    status = client.get(f"/api/v1/providers/{pid}/authorization", headers=account.headers).json()
    assert status["status"] == "active"
    assert status["needs_refresh"] is False
    assert status["last_refreshed_at"] is None

    refreshed = client.post(f"/api/v1/providers/{pid}/token-refreshes", headers=account.headers)
    assert refreshed.status_code == 201, refreshed.text
    assert refreshed.json()["refresh_count"] == 1
    assert refreshed.json()["last_refreshed_at"] is not None

    again = client.post(f"/api/v1/providers/{pid}/token-refreshes", headers=account.headers)
    assert again.status_code == 201, again.text
    assert again.json()["refresh_count"] == 2

    gone = client.delete(f"/api/v1/providers/{pid}/authorization", headers=account.headers)
    assert gone.status_code == 204
    status = client.get(f"/api/v1/providers/{pid}/authorization", headers=account.headers).json()
    assert status["status"] == "revoked"
    assert status["expires_at"] is None

    logs = client.get(f"/api/v1/providers/{pid}/audit-logs", headers=account.headers).json()
    actions = [(row["action"], row["details"]["outcome"]) for row in reversed(logs["items"])]
    assert actions == [
        ("connect", "started"),
        ("callback", "success"),
        ("refresh", "success"),
        ("refresh", "success"),
        ("disconnect", "success"),
    ]
    assert logs["total"] == 5
    assert all(row["user_agent"] == "testclient" for row in logs["items"])
