"""Syncing Schwab: its Trader API's documented shapes mapped, and its bad days survived.

Schwab is stood in by ``httpx.MockTransport`` at the HTTP boundary (its token endpoint and
its Trader API); everything on Dashtam's side is real.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from dashtam.core.config import get_settings
from tests.api.test_schwab import FakeSchwab, _connect_schwab
from tests.support.accounts import Account
from tests.support.schwab_trader import TraderApi, activity, ago


class SchwabServer:
    """Schwab's token endpoint and Trader API behind one transport."""

    def __init__(self) -> None:
        self.oauth = FakeSchwab()
        self.trader = TraderApi()

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/trader/v1/"):
            return self.trader.handle(request)
        return self.oauth.handler(request)


@pytest.fixture
def schwab(schwab_transport: Callable[[httpx.MockTransport], None]) -> SchwabServer:
    server = SchwabServer()
    schwab_transport(httpx.MockTransport(server.handle))
    return server


def _sync(client: TestClient, account: Account, pid: str) -> dict[str, Any]:
    started = client.post(f"/api/v1/providers/{pid}/syncs", headers=account.headers)
    assert started.status_code == 202, started.text
    body: dict[str, Any] = client.get(
        f"/api/v1/providers/{pid}/syncs/{started.json()['id']}", headers=account.headers
    ).json()
    return body


def _accounts(client: TestClient, account: Account) -> dict[str, dict[str, Any]]:
    listed = client.get("/api/v1/accounts", headers=account.headers).json()["items"]
    return {a["number_masked"]: a for a in listed}


def _read(client: TestClient, account: Account, aid: str, what: str) -> list[dict[str, Any]]:
    response = client.get(
        f"/api/v1/accounts/{aid}/{what}", params={"size": 100}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_schwab_accounts_positions_and_transactions_are_mapped(
    client: TestClient, account: Account, schwab: SchwabServer
) -> None:
    pid = _connect_schwab(client, account, schwab.oauth)
    sync = _sync(client, account, pid)
    assert sync["status"] == "succeeded", sync["error"]
    assert (sync["accounts"], sync["positions"], sync["transactions"]) == (2, 2, 4)

    accounts = _accounts(client, account)
    assert set(accounts) == {"****5678", "****4321"}
    margin = accounts["****5678"]
    assert margin["type"] == "margin"
    assert margin["currency"] == "USD"
    assert margin["balance"]["cash"] == "2500.50"
    assert margin["balance"]["market_value"] == "3810.40"
    assert margin["balance"]["total"] == "6310.90"

    [apple] = _read(client, account, margin["id"], "positions")
    assert apple == {
        "symbol": "AAPL",
        "quantity": "20",
        "cost_basis": "3005.00",
        "market_value": "3810.40",
        "currency": "USD",
    }
    transactions = _read(client, account, margin["id"], "transactions")
    assert [(t["type"], t["amount"], t["symbol"]) for t in transactions] == [
        ("deposit", "1000.00", None),
        ("dividend", "4.80", "AAPL"),
        ("buy", "-3005.00", "AAPL"),
    ]
    assert transactions[1]["description"] == "ORDINARY DIVIDEND"
    assert transactions[2]["provider_transaction_id"] == "95512265692"

    # Every call named the account by its hashValue and carried the access token Schwab issued.
    trader_calls = schwab.trader.requests
    assert {r.headers["authorization"] for r in trader_calls} == {"Bearer schwab-access-1"}
    paths = {r.url.path for r in trader_calls}
    assert "/trader/v1/accounts/E5B1A2C3D4/transactions" in paths
    assert not any("12345678" in r.url.path for r in trader_calls)


def test_a_resync_upserts_and_history_longer_than_a_year_is_read_window_by_window(
    client: TestClient, account: Account, schwab: SchwabServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "sync_history_days", 800)
    schwab.trader.activities["E5B1A2C3D4"].append(
        activity(95512260001, ago(700), "WIRE_IN", 5000.0)
    )
    pid = _connect_schwab(client, account, schwab.oauth)
    assert _sync(client, account, pid)["status"] == "succeeded"
    windows = [
        (r.url.params["startDate"], r.url.params["endDate"])
        for r in schwab.trader.requests
        if r.url.path.endswith("E5B1A2C3D4/transactions")
    ]
    assert len(windows) == 3  # 800 days in spans of at most 365
    assert all(end == next_start for (_, end), (next_start, _) in pairwise(windows))
    spans = [datetime.fromisoformat(e[:-1]) - datetime.fromisoformat(s[:-1]) for s, e in windows]
    assert max(spans) <= timedelta(days=365)

    margin = _accounts(client, account)["****5678"]["id"]
    assert len(_read(client, account, margin, "transactions")) == 4
    # Schwab corrects an amount; the re-sync reads the last days again and updates in place.
    schwab.trader.activities["E5B1A2C3D4"][2]["netAmount"] = 1200.0
    assert _sync(client, account, pid)["status"] == "succeeded"
    transactions = _read(client, account, margin, "transactions")
    assert len(transactions) == 4
    assert transactions[0]["amount"] == "1200.00"


def _stored(client: TestClient, account: Account) -> dict[str, Any]:
    accounts = _accounts(client, account)
    return {
        number: {
            "balance": a["balance"],
            "positions": _read(client, account, a["id"], "positions"),
            "transactions": _read(client, account, a["id"], "transactions"),
            "balances": len(_read(client, account, a["id"], "balances")),
        }
        for number, a in accounts.items()
    }


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        pytest.param(
            lambda api: api.accounts[1]["securitiesAccount"]["positions"][0].pop("marketValue"),
            "account ****4321 position VTI: field 'marketValue' is missing",
            id="missing-field",
        ),
        pytest.param(
            lambda api: api.activities["F6A7B8C9D0"].append(
                activity(95512265799, ago(1), "CRYPTO_AIRDROP", 1.0)
            ),
            "account ****4321: transaction 95512265799: unknown transaction type 'CRYPTO_AIRDROP'",
            id="unknown-type",
        ),
        pytest.param(
            lambda api: api.fail.update(
                {"/accounts/F6A7B8C9D0/transactions": httpx.Response(500, json={"message": "x"})}
            ),
            "account ****4321: the provider answered HTTP 500",
            id="provider-500",
        ),
    ],
)
def test_bad_data_for_one_account_leaves_it_as_it_was_and_fails_the_sync(
    client: TestClient,
    account: Account,
    schwab: SchwabServer,
    spoil: Callable[[TraderApi], Any],
    reason: str,
) -> None:
    pid = _connect_schwab(client, account, schwab.oauth)
    assert _sync(client, account, pid)["status"] == "succeeded"
    before = _stored(client, account)

    spoil(schwab.trader)
    # What the healthy account changed meanwhile is still taken in.
    healthy = schwab.trader.accounts[0]["securitiesAccount"]
    healthy["currentBalances"]["cashBalance"] = 2600.5
    sync = _sync(client, account, pid)

    assert sync["status"] == "failed"
    assert sync["error"] == reason
    assert sync["accounts"] == 1
    after = _stored(client, account)
    assert after["****4321"] == before["****4321"]  # untouched: no new snapshot either
    assert after["****5678"]["balance"]["cash"] == "2600.50"
    assert after["****5678"]["balances"] == 2
    logs = client.get(f"/api/v1/providers/{pid}/audit-logs", headers=account.headers).json()
    failure = next(r for r in logs["items"] if r["details"].get("sync_id") == sync["id"])
    assert failure["details"]["outcome"] == "failure"
    assert failure["details"]["error"] == reason


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(500, json={"message": "Internal error"}), "the provider answered HTTP 500"),
        (httpx.Response(200, text="<html>maintenance</html>"), "the provider's answer is not JSON"),
        (httpx.Response(200, json={"accounts": []}), "accounts: the answer is not a list"),
    ],
)
def test_a_provider_failing_before_any_account_changes_nothing(
    client: TestClient,
    account: Account,
    schwab: SchwabServer,
    response: httpx.Response,
    reason: str,
) -> None:
    pid = _connect_schwab(client, account, schwab.oauth)
    assert _sync(client, account, pid)["status"] == "succeeded"
    before = _stored(client, account)
    schwab.trader.fail["/accounts"] = response
    sync = _sync(client, account, pid)
    assert sync["status"] == "failed"
    assert sync["error"] == reason
    assert sync["accounts"] == 0
    assert _stored(client, account) == before


def test_a_token_schwab_keeps_refusing_fails_the_sync_after_one_refresh(
    client: TestClient, account: Account, schwab: SchwabServer
) -> None:
    pid = _connect_schwab(client, account, schwab.oauth)
    schwab.trader.fail["/accounts/accountNumbers"] = httpx.Response(
        401, json={"message": "Client not authorized"}
    )
    sync = _sync(client, account, pid)
    assert sync["status"] == "failed"
    assert sync["error"] == "the provider refused the access token (HTTP 401)"
    assert schwab.oauth.requests[-1]["grant_type"] == "refresh_token"  # it tried once
    refreshes = [r for r in schwab.oauth.requests if r["grant_type"] == "refresh_token"]
    assert len(refreshes) == 1
    assert Decimal(0) == Decimal(len(_accounts(client, account)))
