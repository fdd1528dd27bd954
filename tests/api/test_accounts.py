"""The read API: query counts pinned, filters, pages, order, and other users' accounts."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.accounts import Account, add_provider, connect, register_and_login


def _synced(client: TestClient, account: Account, alias: str = "My sandbox") -> str:
    pid: str = add_provider(client, account, alias=alias)["id"]
    connect(client, account, pid)
    started = client.post(f"/api/v1/providers/{pid}/syncs", headers=account.headers)
    assert started.status_code == 202, started.text
    sync = client.get(
        f"/api/v1/providers/{pid}/syncs/{started.json()['id']}", headers=account.headers
    ).json()
    assert sync["status"] == "succeeded", sync
    return pid


def _get(client: TestClient, account: Account, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/v1{path}", params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def synced(client: TestClient, account: Account) -> tuple[Account, str]:
    return account, _synced(client, account)


# One statement per read, the caller's authentication included: the rows with their total
# (and each account's newest balance), read through the caller's open session and ownership
# of the account. Four accounts of two providers cost what one account would.
@pytest.mark.parametrize(
    ("path", "queries"),
    [
        ("/accounts", 1),
        ("/accounts/{aid}", 1),
        ("/accounts/{aid}/positions", 1),
        ("/accounts/{aid}/transactions", 1),
        ("/accounts/{aid}/balances", 1),
    ],
)
def test_every_listing_runs_a_fixed_number_of_queries(
    client: TestClient, account: Account, pg_queries: Any, path: str, queries: int
) -> None:
    _synced(client, account)
    _synced(client, account, alias="Second sandbox")
    aid = _get(client, account, "/accounts")["items"][0]["id"]
    with pg_queries.at_most(queries):
        body = _get(client, account, path.format(aid=aid), size=100)
    assert body.get("items", [body])  # it served something


def test_accounts_filter_by_provider_and_page(client: TestClient, account: Account) -> None:
    first = _synced(client, account)
    second = _synced(client, account, alias="Second sandbox")
    everything = _get(client, account, "/accounts")
    assert everything["total"] == 4
    only_second = _get(client, account, "/accounts", provider_id=second)
    assert only_second["total"] == 2
    assert {a["provider_id"] for a in only_second["items"]} == {second}
    page_two = _get(client, account, "/accounts", page=2, size=3)
    assert len(page_two["items"]) == 1
    seen = [a["id"] for a in _get(client, account, "/accounts", size=3)["items"]]
    assert page_two["items"][0]["id"] not in seen
    assert first != second


def test_transactions_newest_first_filtered_and_paged_without_gaps(
    client: TestClient, synced: tuple[Account, str]
) -> None:
    account, _ = synced
    aid = _get(client, account, "/accounts")["items"][0]["id"]
    everything = _get(client, account, f"/accounts/{aid}/transactions", size=100)
    total = everything["total"]
    paged: list[dict[str, Any]] = []
    for page in range(1, total // 25 + 2):
        paged += _get(client, account, f"/accounts/{aid}/transactions", size=25, page=page)["items"]
    assert len(paged) == total
    assert len({t["id"] for t in paged}) == total
    keys = [(t["posted_at"], t["id"]) for t in paged]
    assert keys == sorted(keys, reverse=True)

    dividends = _get(client, account, f"/accounts/{aid}/transactions", type="dividend", size=100)
    assert dividends["items"]
    assert {t["type"] for t in dividends["items"]} == {"dividend"}
    assert dividends["total"] < total

    middle = paged[total // 2]["posted_at"]
    newer = _get(client, account, f"/accounts/{aid}/transactions", since=middle, size=100)
    older = _get(client, account, f"/accounts/{aid}/transactions", until=middle, size=100)
    assert all(t["posted_at"] >= middle for t in newer["items"])
    assert all(t["posted_at"] <= middle for t in older["items"])
    # The boundary belongs to both sides.
    assert newer["total"] + older["total"] >= total
    assert all(isinstance(t["amount"], str) for t in paged)


def test_bad_filters_are_clear_422s(client: TestClient, synced: tuple[Account, str]) -> None:
    account, _ = synced
    aid = _get(client, account, "/accounts")["items"][0]["id"]
    for params in ({"type": "lottery"}, {"since": "yesterday"}, {"size": 0}, {"page": 0}):
        response = client.get(
            f"/api/v1/accounts/{aid}/transactions", params=params, headers=account.headers
        )
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["loc"][0] == "query"


def test_another_users_accounts_are_not_found(
    client: TestClient, synced: tuple[Account, str]
) -> None:
    owner, pid = synced
    aid = _get(client, owner, "/accounts")["items"][0]["id"]
    stranger = register_and_login(client)
    assert _get(client, stranger, "/accounts")["total"] == 0
    assert _get(client, stranger, "/accounts", provider_id=pid)["total"] == 0
    for path in ("", "/positions", "/transactions", "/balances"):
        response = client.get(f"/api/v1/accounts/{aid}{path}", headers=stranger.headers)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
    sync = client.post(f"/api/v1/providers/{pid}/syncs", headers=stranger.headers)
    assert sync.status_code == 404


def test_an_empty_page_of_ones_own_account_is_no_404(
    client: TestClient, synced: tuple[Account, str]
) -> None:
    owner, _ = synced
    aid = _get(client, owner, "/accounts")["items"][0]["id"]
    stranger = register_and_login(client)
    long_ago = {"until": "1990-01-01T00:00:00Z"}

    nothing = _get(client, owner, f"/accounts/{aid}/transactions", **long_ago)
    assert nothing == {"items": [], "total": 0, "page": 1, "size": 20}
    total = _get(client, owner, f"/accounts/{aid}/transactions")["total"]
    beyond = _get(client, owner, f"/accounts/{aid}/transactions", page=1000)
    assert beyond == {"items": [], "total": total, "page": 1000, "size": 20}
    for params in (long_ago, {"page": 1000}):
        response = client.get(
            f"/api/v1/accounts/{aid}/transactions", params=params, headers=stranger.headers
        )
        assert response.status_code == 404, params


def test_every_read_refuses_a_session_that_has_ended(
    client: TestClient, synced: tuple[Account, str]
) -> None:
    account, pid = synced
    aid = _get(client, account, "/accounts")["items"][0]["id"]
    reads = [
        "/auth/me",
        "/auth/sessions",
        "/providers",
        f"/providers/{pid}",
        f"/providers/{pid}/authorization",
        f"/providers/{pid}/audit-logs",
        "/accounts",
        f"/accounts/{aid}",
        f"/accounts/{aid}/positions",
        f"/accounts/{aid}/transactions",
        f"/accounts/{aid}/balances",
    ]
    for path in reads:  # each of them has rows to show
        assert client.get(f"/api/v1{path}", headers=account.headers).status_code == 200, path

    assert client.post("/api/v1/auth/logout", headers=account.headers).status_code == 204

    for path in reads:
        response = client.get(f"/api/v1{path}", headers=account.headers)
        assert response.status_code == 401, path
        assert "has ended" in response.json()["detail"], path


def test_sync_status_of_an_unknown_sync_is_404(
    client: TestClient, synced: tuple[Account, str]
) -> None:
    account, pid = synced
    response = client.get(
        f"/api/v1/providers/{pid}/syncs/00000000-0000-0000-0000-000000000000",
        headers=account.headers,
    )
    assert response.status_code == 404
    assert "Sync" in response.json()["detail"]


def test_a_second_sync_while_one_is_queued_is_409(
    client: TestClient, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashtam.core.config import get_settings

    # Leave requested syncs to the workers, so the first one stays queued.
    monkeypatch.setattr(get_settings(), "sync_in_api", False)
    pid = add_provider(client, account)["id"]
    connect(client, account, pid)
    first = client.post(f"/api/v1/providers/{pid}/syncs", headers=account.headers)
    assert first.status_code == 202
    second = client.post(f"/api/v1/providers/{pid}/syncs", headers=account.headers)
    assert second.status_code == 409
    assert second.json()["sync_id"] == first.json()["id"]
    queued = client.get(
        f"/api/v1/providers/{pid}/syncs/{first.json()['id']}", headers=account.headers
    ).json()
    assert queued["status"] == "queued"
    assert queued["started_at"] is None
