"""Every error is RFC 9457 problem+json; hostile input never produces a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.accounts import Account, add_provider

PROBLEM = "application/problem+json"


def _is_problem(response: object, status: int) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == PROBLEM  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status
    assert body["title"]


def test_unknown_route_and_method(client: TestClient) -> None:
    _is_problem(client.get("/api/v1/nothing-here"), 404)
    _is_problem(client.put("/health"), 405)


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/api/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    _is_problem(response, 422)


@pytest.mark.parametrize(
    "alias",
    ["", "a\x00b", "tab\there", "x" * 101, None, 12],
)
def test_bad_aliases_are_422_not_500(client: TestClient, account: Account, alias: object) -> None:
    response = client.post(
        "/api/v1/providers",
        json={"provider_key": "sandbox", "alias": alias},
        headers=account.headers,
    )
    _is_problem(response, 422)
    assert response.json()["errors"][0]["loc"] == ["body", "alias"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/providers/not-a-uuid",
        "/api/v1/providers?page=0",
        "/api/v1/providers?size=1000",
        "/api/v1/providers?page=99999999999999999999",
    ],
)
def test_bad_paths_and_pages_are_422(client: TestClient, account: Account, path: str) -> None:
    _is_problem(client.get(path, headers=account.headers), 422)


def test_hostile_strings_never_500(client: TestClient, account: Account) -> None:
    nul_email = client.post("/api/v1/auth/login", json={"email": "a\x00@x.io", "password": "p\x00"})
    _is_problem(nul_email, 422)
    register = client.post(
        "/api/v1/auth/register", json={"email": "a@b.io", "password": "x\x00" * 10}
    )
    assert register.status_code == 201  # passwords are hashed, never stored: any character is fine
    pid = add_provider(client, account)["id"]
    callback = client.get(
        f"/api/v1/providers/{pid}/authorization/callback", params={"code": "\x00", "state": "\x00"}
    )
    _is_problem(callback, 400)
    authorize = client.get(
        "/sandbox/oauth/authorize",
        params={
            "client_id": "dashtam-sandbox",
            "redirect_uri": "http://x/\x00",
            "response_type": "code",
        },
    )
    _is_problem(authorize, 400)
    refresh = client.post("/api/v1/auth/refresh", json={"refresh_token": "\x00"})
    _is_problem(refresh, 401)


def test_health_reports_service_and_database(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "ok", "database": "ok"}
