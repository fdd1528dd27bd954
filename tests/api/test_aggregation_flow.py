"""The aggregation journey over ``TestClient``: connect, sync, read, refresh, re-sync."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient

from tests.support.accounts import Account, add_provider, connect


def _sync(client: TestClient, account: Account, pid: str) -> dict[str, Any]:
    started = client.post(f"/api/v1/providers/{pid}/syncs", headers=account.headers)
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "queued"
    sync_id = started.json()["id"]
    # The API runs the sync once it has answered; TestClient returns after that work.
    done = client.get(f"/api/v1/providers/{pid}/syncs/{sync_id}", headers=account.headers)
    assert done.status_code == 200, done.text
    body: dict[str, Any] = done.json()
    return body


def test_connect_sync_read_refresh_and_resync_without_duplicates(
    client: TestClient, account: Account
) -> None:
    pid = add_provider(client, account)["id"]
    connect(client, account, pid)

    first = _sync(client, account, pid)
    assert first["status"] == "succeeded", first
    assert first["error"] is None
    assert first["accounts"] == 2
    assert first["positions"] >= 2
    assert first["transactions"] > 20
    assert first["started_at"] is not None
    assert first["finished_at"] is not None

    listed = client.get("/api/v1/accounts", headers=account.headers).json()
    assert listed["total"] == 2
    assert {a["type"] for a in listed["items"]} == {"brokerage", "ira"}
    first_account = listed["items"][0]
    assert first_account["provider_id"] == pid
    assert first_account["number_masked"].startswith("****")
    balance = first_account["balance"]
    assert Decimal(balance["total"]) == Decimal(balance["cash"]) + Decimal(balance["market_value"])
    assert isinstance(balance["cash"], str)
    assert "." in balance["cash"]

    aid = first_account["id"]
    one = client.get(f"/api/v1/accounts/{aid}", headers=account.headers).json()
    assert one == first_account

    positions = client.get(f"/api/v1/accounts/{aid}/positions", headers=account.headers).json()
    assert positions["items"]
    assert all(p["currency"] == "USD" and Decimal(p["quantity"]) > 0 for p in positions["items"])

    page = client.get(
        f"/api/v1/accounts/{aid}/transactions", params={"size": 10}, headers=account.headers
    ).json()
    assert len(page["items"]) == 10
    assert page["total"] > 10
    posted = [t["posted_at"] for t in page["items"]]
    assert posted == sorted(posted, reverse=True)

    refreshed = client.post(f"/api/v1/providers/{pid}/token-refreshes", headers=account.headers)
    assert refreshed.status_code == 201, refreshed.text

    second = _sync(client, account, pid)
    assert second["status"] == "succeeded", second
    again = client.get(
        f"/api/v1/accounts/{aid}/transactions", params={"size": 10}, headers=account.headers
    ).json()
    assert again["total"] == page["total"]  # upserted by the provider's id: no duplicates
    listed_again = client.get("/api/v1/accounts", headers=account.headers).json()
    assert listed_again["total"] == 2
    balances = client.get(f"/api/v1/accounts/{aid}/balances", headers=account.headers).json()
    assert balances["total"] == 2
