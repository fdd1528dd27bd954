"""Providers: CRUD, pagination, uniqueness, and other users' providers being invisible."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.support.accounts import Account, add_provider, connect


def test_provider_types_include_sandbox_and_schwab(client: TestClient) -> None:
    response = client.get("/api/v1/provider-types")
    assert response.status_code == 200
    keys = {item["key"] for item in response.json()["items"]}
    assert {"sandbox", "schwab"} <= keys


def test_create_get_rename_delete(client: TestClient, account: Account) -> None:
    created = add_provider(client, account, alias="Main")
    assert created["provider_key"] == "sandbox"
    assert created["alias"] == "Main"
    assert created["status"] == "not_connected"
    url = f"/api/v1/providers/{created['id']}"

    assert client.get(url, headers=account.headers).json()["alias"] == "Main"
    renamed = client.patch(url, json={"alias": "Renamed"}, headers=account.headers)
    assert renamed.status_code == 200
    assert renamed.json()["alias"] == "Renamed"

    assert client.delete(url, headers=account.headers).status_code == 204
    assert client.get(url, headers=account.headers).status_code == 404


def test_alias_is_unique_per_user(client: TestClient, make_account: Callable[[], Account]) -> None:
    alice, bob = make_account(), make_account()
    add_provider(client, alice, alias="Brokerage")
    add_provider(client, bob, alias="Brokerage")  # another user may reuse it
    duplicate = client.post(
        "/api/v1/providers",
        json={"provider_key": "schwab", "alias": "Brokerage"},
        headers=alice.headers,
    )
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"] == "application/problem+json"
    assert duplicate.json()["field"] == "alias"

    other = add_provider(client, alice, alias="Other")
    rename = client.patch(
        f"/api/v1/providers/{other['id']}", json={"alias": "Brokerage"}, headers=alice.headers
    )
    assert rename.status_code == 409


def test_another_conflict_on_create_is_not_reported_as_alias_taken(
    client: TestClient, account: Account, db: Any
) -> None:
    # Any other constraint violated while creating: here a foreign key, raised by a trigger.
    db.execute(
        text(
            """
            CREATE FUNCTION refuse_connection() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE foreign_key_violation USING CONSTRAINT = 'fk_injected';
            END $$
            """
        )
    )
    db.execute(
        text(
            "CREATE TRIGGER refuse_connection BEFORE INSERT ON provider_connections"
            " FOR EACH ROW EXECUTE FUNCTION refuse_connection()"
        )
    )
    response = client.post(
        "/api/v1/providers",
        json={"provider_key": "sandbox", "alias": "Fresh name"},
        headers=account.headers,
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert "field" not in response.json()
    assert "already have a provider" not in response.json()["detail"]


# Rows are ordered by created_at = now(), the time their transaction began: each request
# needs a transaction of its own (as in production) for the order to be the request order.
@pytest.mark.pg_isolation("database")
def test_listing_is_paginated(client: TestClient, account: Account) -> None:
    for n in range(5):
        add_provider(client, account, alias=f"P{n}")
    page = client.get("/api/v1/providers?page=2&size=2", headers=account.headers).json()
    assert page["total"] == 5
    assert page["page"] == 2
    assert page["size"] == 2
    assert [item["alias"] for item in page["items"]] == ["P2", "P3"]
    last = client.get("/api/v1/providers?page=3&size=2", headers=account.headers).json()
    assert [item["alias"] for item in last["items"]] == ["P4"]


def test_unknown_provider_type_is_422_naming_the_field(
    client: TestClient, account: Account
) -> None:
    response = client.post(
        "/api/v1/providers", json={"provider_key": "nope", "alias": "x"}, headers=account.headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "provider_key"]


def test_another_users_provider_is_404_everywhere(
    client: TestClient, make_account: Callable[[], Account]
) -> None:
    owner, stranger = make_account(), make_account()
    provider = add_provider(client, owner)
    connect(client, owner, provider["id"])
    base = f"/api/v1/providers/{provider['id']}"
    calls = [
        ("GET", base, None),
        ("PATCH", base, {"alias": "mine now"}),
        ("DELETE", base, None),
        ("POST", f"{base}/authorization", None),
        ("GET", f"{base}/authorization", None),
        ("DELETE", f"{base}/authorization", None),
        ("POST", f"{base}/token-refreshes", None),
        ("GET", f"{base}/audit-logs", None),
    ]
    for method, url, body in calls:
        response = client.request(method, url, json=body, headers=stranger.headers)
        assert response.status_code == 404, (method, url, response.status_code)
        assert response.headers["content-type"] == "application/problem+json"

    assert client.get("/api/v1/providers", headers=stranger.headers).json()["total"] == 0
    still = client.get(f"{base}/authorization", headers=owner.headers).json()
    assert still["status"] == "active"
    assert client.get(base, headers=owner.headers).json()["alias"] == provider["alias"]


def test_providers_need_authentication(client: TestClient) -> None:
    response = client.get("/api/v1/providers")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


# Round trips are what a read costs: one statement, the page with its total and each
# provider's connection, read through the caller's open session.
def test_listing_providers_costs_one_query(
    client: TestClient, account: Account, pg_queries: Any
) -> None:
    for number in range(3):
        add_provider(client, account, alias=f"Pinned {number}")

    with pg_queries.at_most(1):
        listed = client.get("/api/v1/providers", headers=account.headers)

    assert listed.status_code == 200
    assert listed.json()["total"] == 3


def test_a_page_past_the_end_still_counts_the_providers(
    client: TestClient, account: Account
) -> None:
    add_provider(client, account)

    beyond = client.get("/api/v1/providers?page=3&size=1", headers=account.headers)

    assert beyond.json() == {"items": [], "total": 1, "page": 3, "size": 1}


def test_reading_one_provider_costs_one_query(
    client: TestClient, account: Account, pg_queries: Any
) -> None:
    created = add_provider(client, account)

    with pg_queries.at_most(1):
        read = client.get(f"/api/v1/providers/{created['id']}", headers=account.headers)

    assert read.status_code == 200
