"""Nobody reaches another user's resources; only genuine, current access tokens get in."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from dashtam.core.clock import utcnow
from dashtam.core.config import get_settings
from dashtam.main import app
from tests.support.accounts import Account, add_provider, connect, register_and_login

_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/v1/providers/{provider_id}"): {"alias": "Taken over"},
}
_BY_STATE = "/api/v1/providers/{provider_id}/authorization/callback"  # checked separately


def _routes_taking_a_provider_id() -> list[tuple[str, str]]:
    """From the app's own OpenAPI document, so a new route cannot be forgotten here."""
    return sorted(
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if "{provider_id}" in path and path != _BY_STATE
        for method in operations
    )


def test_every_route_with_an_id_is_covered() -> None:
    routes = _routes_taking_a_provider_id()
    # get/patch/delete provider, start/status/disconnect authorization, refresh, audit logs.
    assert len(routes) >= 8, routes


@pytest.mark.parametrize(("method", "path"), _routes_taking_a_provider_id())
def test_another_users_provider_is_not_found(client: TestClient, method: str, path: str) -> None:
    owner = register_and_login(client)
    intruder = register_and_login(client)
    provider = add_provider(client, owner)
    connect(client, owner, provider["id"])
    url = path.replace("{provider_id}", provider["id"])
    if "{sync_id}" in path:  # the owner's own sync, seen from the intruder's side
        sync = client.post(f"/api/v1/providers/{provider['id']}/syncs", headers=owner.headers)
        url = url.replace("{sync_id}", sync.json()["id"])

    response = client.request(
        method, url, headers=intruder.headers, json=_BODIES.get((method, path))
    )

    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    # And nothing of the owner's changed.
    mine = client.get(f"/api/v1/providers/{provider['id']}", headers=owner.headers)
    assert mine.status_code == 200
    assert mine.json()["alias"] == provider["alias"]
    assert mine.json()["status"] == "active"
    status = client.get(f"/api/v1/providers/{provider['id']}/authorization", headers=owner.headers)
    assert status.json()["refresh_count"] == 0


def test_a_state_for_my_provider_does_not_complete_anothers(client: TestClient) -> None:
    owner = register_and_login(client)
    intruder = register_and_login(client)
    victim_provider = add_provider(client, owner)
    own_provider = add_provider(client, intruder)
    start = client.post(
        f"/api/v1/providers/{own_provider['id']}/authorization", headers=intruder.headers
    )
    state = start.json()["state"]
    response = client.get(
        f"/api/v1/providers/{victim_provider['id']}/authorization/callback",
        params={"code": "anything", "state": state},
    )
    assert response.status_code == 400
    status = client.get(
        f"/api/v1/providers/{victim_provider['id']}/authorization", headers=owner.headers
    )
    assert status.json()["status"] == "not_connected"


def _claims(account: Account) -> dict[str, Any]:
    return jwt.decode(account.access_token, options={"verify_signature": False})


def _forged(account: Account, **changes: Any) -> str:
    claims = {**_claims(account), **changes}
    return jwt.encode(claims, get_settings().signing_key, algorithm="HS256")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _tokens(account: Account, other: Account) -> dict[str, str]:
    secret = get_settings().signing_key
    claims = _claims(account)
    header, payload, signature = account.access_token.split(".")
    return {
        "expired": _forged(account, exp=int((utcnow() - timedelta(seconds=5)).timestamp())),
        "wrong audience": _forged(account, aud="dashtam:authorization-state"),
        "no audience": jwt.encode(
            {k: v for k, v in claims.items() if k != "aud"}, secret, algorithm="HS256"
        ),
        "no expiry": jwt.encode(
            {k: v for k, v in claims.items() if k != "exp"}, secret, algorithm="HS256"
        ),
        "other algorithm": jwt.encode(claims, secret, algorithm="HS512"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "wrong key": jwt.encode(claims, "x" * 64, algorithm="HS256"),
        "tampered subject": ".".join(
            (header, _b64({**claims, "sub": _claims(other)["sub"]}), signature)
        ),
        "truncated signature": account.access_token[:-4],
        "garbage": "not-a-token",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "expired",
        "wrong audience",
        "no audience",
        "no expiry",
        "other algorithm",
        "alg none",
        "wrong key",
        "tampered subject",
        "truncated signature",
        "garbage",
    ],
)
def test_bad_access_tokens_are_rejected(client: TestClient, kind: str) -> None:
    account = register_and_login(client)
    other = register_and_login(client)
    token = _tokens(account, other)[kind]

    response = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert token not in response.text


def test_a_genuine_token_gets_in(client: TestClient) -> None:
    account = register_and_login(client)
    response = client.get("/api/v1/auth/me", headers=account.headers)
    assert response.status_code == 200
    assert response.json()["email"] == account.email
