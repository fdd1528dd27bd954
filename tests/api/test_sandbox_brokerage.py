"""The sandbox's brokerage API: its access tokens, stable accounts, moving prices, history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from dashtam.core.security import pkce_pair
from dashtam.providers.registry import SANDBOX_CLIENT_ID, sandbox_client_secret
from tests.api.test_sandbox_server import REDIRECT, _code, _token


def _grant(client: TestClient) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    issued = _token(
        client,
        {
            "grant_type": "authorization_code",
            "code": _code(client, challenge),
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
    )
    assert issued.status_code == 200, issued.text
    body: dict[str, Any] = issued.json()
    return body


def _accounts(client: TestClient, access_token: str) -> Any:
    return client.get("/sandbox/api/accounts", headers={"Authorization": f"Bearer {access_token}"})


def test_accounts_are_the_grants_own_and_the_same_on_every_call(client: TestClient) -> None:
    first, other = _grant(client), _grant(client)
    body = _accounts(client, first["access_token"]).json()
    again = _accounts(client, first["access_token"]).json()
    ids = [account["id"] for account in body["accounts"]]
    assert ids == [account["id"] for account in again["accounts"]]
    assert len(ids) == 2
    others = [a["id"] for a in _accounts(client, other["access_token"]).json()["accounts"]]
    assert set(ids).isdisjoint(others)
    # After a refresh the grant is the same: so are its accounts.
    rotated = _token(
        client, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    ).json()
    refreshed = _accounts(client, rotated["access_token"]).json()
    assert [a["id"] for a in refreshed["accounts"]] == ids


def test_prices_move_between_calls(client: TestClient) -> None:
    token = _grant(client)["access_token"]
    before = _accounts(client, token).json()["accounts"][0]["positions"][0]
    later = []
    # Two later calls: around a turn of the quote's curve, one of them can round to the same cent.
    for seconds in (5, 11):
        with shifted(timedelta(seconds=seconds)):
            later.append(_accounts(client, token).json()["accounts"][0]["positions"][0])
    assert {position["symbol"] for position in later} == {before["symbol"]}
    assert {position["quantity"] for position in later} == {before["quantity"]}
    assert {position["price"] for position in later} != {before["price"]}


def test_history_grows_and_honours_the_window(client: TestClient) -> None:
    grant = _grant(client)
    headers = {"Authorization": f"Bearer {grant['access_token']}"}
    account_id = _accounts(client, grant["access_token"]).json()["accounts"][0]["id"]
    path = f"/sandbox/api/accounts/{account_id}/transactions"
    now = client.get(path, headers=headers).json()["transactions"]
    assert now
    with shifted(timedelta(hours=13)):
        rotated = _token(
            client, {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
        ).json()
        headers = {"Authorization": f"Bearer {rotated['access_token']}"}
        later = client.get(path, headers=headers).json()["transactions"]
        window = client.get(
            path,
            headers=headers,
            params={"start": now[0]["posted_at"], "end": later[0]["posted_at"]},
        ).json()["transactions"]
        elsewhere = client.get("/sandbox/api/accounts/SBX0/transactions", headers=headers)
    assert later[0]["posted_at"] > now[0]["posted_at"]
    assert 2 <= len(window) < len(later)
    assert [t["id"] for t in window] == [t["id"] for t in later[: len(window)]]
    assert elsewhere.status_code == 404


def test_missing_expired_and_revoked_tokens_are_401(client: TestClient) -> None:
    assert client.get("/sandbox/api/accounts").status_code == 401
    assert _accounts(client, "sbx_at_made-up").status_code == 401
    grant = _grant(client)
    lifetime = get_settings().sandbox_access_token_seconds
    with shifted(timedelta(seconds=lifetime + 1)):
        expired = _accounts(client, grant["access_token"])
    assert expired.status_code == 401
    assert expired.headers["content-type"] == "application/problem+json"
    assert expired.headers["www-authenticate"] == "Bearer"

    fresh = _grant(client)
    revoked = client.post(
        "/sandbox/oauth/revoke",
        data={"token": fresh["access_token"]},
        auth=(SANDBOX_CLIENT_ID, sandbox_client_secret(get_settings())),
    )
    assert revoked.status_code == 200
    assert _accounts(client, fresh["access_token"]).status_code == 401
    # Revoking the grant ended its refresh token too.
    again = _token(client, {"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"]})
    assert again.json()["error"] == "invalid_grant"
