"""Hand-picked hostile input: each gets a clear 4xx problem, and nothing is stored wrong."""

from __future__ import annotations

import unicodedata

import pytest
from fastapi.testclient import TestClient

from dashtam.core.config import get_settings
from tests.support.accounts import Account, add_provider, register_and_login


def _problem(response: object, status: int) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]


@pytest.fixture
def me(client: TestClient) -> Account:
    return register_and_login(client)


def _aliases(client: TestClient, account: Account) -> list[str]:
    listing = client.get("/api/v1/providers", headers=account.headers, params={"size": 100})
    assert listing.status_code == 200
    return [item["alias"] for item in listing.json()["items"]]


def test_oversized_bodies_are_refused_with_413(client: TestClient, me: Account) -> None:
    limit = get_settings().max_request_bytes
    huge = {"provider_key": "sandbox", "alias": "x" * (limit + 1)}
    _problem(client.post("/api/v1/providers", json=huge, headers=me.headers), 413)

    def chunks() -> object:  # no Content-Length: counted while it streams
        yield b'{"email": "a@example.com", "password": "'
        for _ in range(limit // 1024 + 2):
            yield b"p" * 1024
        yield b'"}'

    streamed = client.post(
        "/api/v1/auth/login",
        content=chunks(),  # type: ignore[arg-type]
        headers={"content-type": "application/json"},
    )
    _problem(streamed, 413)
    assert _aliases(client, me) == []


@pytest.mark.parametrize(
    "provider_id", ["not-a-uuid", "1", "' OR 1=1 --", "00000000-0000-0000-0000-00000000000g"]
)
def test_bad_ids_are_422(client: TestClient, me: Account, provider_id: str) -> None:
    _problem(client.get(f"/api/v1/providers/{provider_id}", headers=me.headers), 422)


def test_unknown_ids_are_404(client: TestClient, me: Account) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    _problem(client.get(f"/api/v1/providers/{missing}", headers=me.headers), 404)


@pytest.mark.parametrize(
    "alias",
    [
        "Robert'); DROP TABLE providers; --",
        "' OR '1'='1",
        "%' AND 1=0 UNION SELECT password_hash FROM users --",
        "Ünïcödé 💹 تداول 株式",
        "👨‍👩‍👧 family",
    ],
)
def test_sql_looking_and_unicode_aliases_are_stored_verbatim(
    client: TestClient, me: Account, alias: str
) -> None:
    created = add_provider(client, me, alias=alias)
    assert created["alias"] == alias
    assert _aliases(client, me) == [alias]
    fetched = client.get(f"/api/v1/providers/{created['id']}", headers=me.headers)
    assert fetched.json()["alias"] == alias


def test_one_alias_in_two_unicode_spellings_is_one_alias(client: TestClient, me: Account) -> None:
    composed = unicodedata.normalize("NFC", "Café")
    decomposed = unicodedata.normalize("NFD", "Café")
    assert composed != decomposed
    add_provider(client, me, alias=decomposed)
    second = client.post(
        "/api/v1/providers", json={"provider_key": "sandbox", "alias": composed}, headers=me.headers
    )
    _problem(second, 409)
    assert _aliases(client, me) == [composed]


@pytest.mark.parametrize(
    "alias",
    ["nul\x00byte", "bell\x07", "\u202egnp.exe", "   ", "", "c1\x85control", "x" * 101],
)
def test_unstorable_or_deceptive_aliases_are_422(
    client: TestClient, me: Account, alias: str
) -> None:
    response = client.post(
        "/api/v1/providers", json={"provider_key": "sandbox", "alias": alias}, headers=me.headers
    )
    _problem(response, 422)
    assert alias.strip() == "" or alias not in response.text  # input is not echoed
    assert _aliases(client, me) == []


def test_lone_surrogate_is_refused_not_stored(client: TestClient, me: Account) -> None:
    raw = b'{"provider_key": "sandbox", "alias": "bad \\ud800 half"}'
    response = client.post(
        "/api/v1/providers",
        content=raw,
        headers={**me.headers, "content-type": "application/json"},
    )
    _problem(response, 422)
    assert _aliases(client, me) == []


@pytest.mark.parametrize(
    "email", ["' OR 1=1 --", "admin'--@example.com", "x@example.com\x00", "é" * 400]
)
def test_sql_looking_logins_are_plain_failures(client: TestClient, email: str) -> None:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": "whatever!"})
    assert response.status_code in {401, 422}, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_malformed_json_is_422(client: TestClient, me: Account) -> None:
    response = client.post(
        "/api/v1/providers",
        content=b'{"provider_key": "sandbox", "alias": ',
        headers={**me.headers, "content-type": "application/json"},
    )
    _problem(response, 422)
