"""The sandbox authorization server speaks RFC 6749 (with PKCE) to any client."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from dashtam.core.security import pkce_pair
from dashtam.models import SandboxAuthorizationCode
from dashtam.providers.registry import SANDBOX_CLIENT_ID, sandbox_client_secret
from dashtam.services.authorization import callback_uri

# The sandbox's one client is Dashtam: it redirects only to Dashtam's own callback.
REDIRECT = callback_uri(get_settings().public_url, uuid.uuid4())


def _code(client: TestClient, challenge: str) -> str:
    response = client.get(
        "/sandbox/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": SANDBOX_CLIENT_ID,
            "redirect_uri": REDIRECT,
            "state": "s1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        follow_redirects=False,
    )
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    assert query["state"] == ["s1"]
    return query["code"][0]


def _token(client: TestClient, form: dict[str, str], secret: str | None = None) -> httpx.Response:
    auth = (SANDBOX_CLIENT_ID, secret or sandbox_client_secret(get_settings()))
    return client.post("/sandbox/oauth/token", data=form, auth=auth)


def test_code_with_pkce_then_rotating_refresh(client: TestClient) -> None:
    verifier, challenge = pkce_pair()
    code = _code(client, challenge)
    wrong = _token(
        client,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": "x" * 43,
        },
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"

    code = _code(client, challenge)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    issued = _token(client, form)
    assert issued.status_code == 200
    assert issued.headers["cache-control"] == "no-store"
    tokens = issued.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] > 0
    assert _token(client, form).json()["error"] == "invalid_grant"  # codes are single-use

    rotated = _token(
        client, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert rotated.status_code == 200
    newest = rotated.json()["refresh_token"]
    assert newest != tokens["refresh_token"]

    reuse = _token(
        client, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert reuse.json()["error"] == "invalid_grant"
    # Reuse revoked the family, so the newest token is dead too.
    assert (
        _token(client, {"grant_type": "refresh_token", "refresh_token": newest}).status_code == 400
    )


def test_client_authentication_and_grant_type(client: TestClient) -> None:
    bad_client = _token(
        client, {"grant_type": "refresh_token", "refresh_token": "x"}, secret="wrong"
    )
    assert bad_client.status_code == 401
    assert bad_client.json()["error"] == "invalid_client"
    assert bad_client.headers["www-authenticate"].startswith("Basic")
    unsupported = _token(client, {"grant_type": "password"})
    assert unsupported.json()["error"] == "unsupported_grant_type"


def test_deny_redirects_with_access_denied(client: TestClient) -> None:
    response = client.get(
        "/sandbox/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": SANDBOX_CLIENT_ID,
            "redirect_uri": REDIRECT,
            "state": "s2",
            "decision": "deny",
        },
        follow_redirects=False,
    )
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["s2"]


def test_unknown_client_gets_an_error_page_not_a_redirect(client: TestClient) -> None:
    response = client.get(
        "/sandbox/oauth/authorize",
        params={"response_type": "code", "client_id": "evil", "redirect_uri": REDIRECT},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def _authorize(client: TestClient, redirect_uri: str) -> httpx.Response:
    return client.get(
        "/sandbox/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": SANDBOX_CLIENT_ID,
            "redirect_uri": redirect_uri,
        },
        follow_redirects=False,
    )


def test_redirects_only_to_dashtams_own_callback(client: TestClient, db: Any) -> None:
    for elsewhere in (
        "https://attacker.example/cb",
        "http://127.0.0.1:8000/elsewhere",
        f"https://attacker.example/api/v1/providers/{uuid.uuid4()}/authorization/callback",
        f"{get_settings().public_url}/api/v1/providers/not-a-uuid/authorization/callback",
        f"{REDIRECT}?next=https://attacker.example",
    ):
        response = _authorize(client, elsewhere)
        assert response.status_code == 400, elsewhere
        assert response.headers["content-type"] == "application/problem+json"
        assert "location" not in response.headers
    assert db.scalar(select(func.count(SandboxAuthorizationCode.id))) == 0
    assert _authorize(client, REDIRECT).status_code == 302


def test_authorize_is_limited_per_address(client: TestClient, monkeypatch: Any) -> None:
    monkeypatch.setattr(get_settings(), "sandbox_authorize_max_per_address", 2)
    assert [_authorize(client, REDIRECT).status_code for _ in range(3)] == [302, 302, 429]


def test_revocation_revokes_the_whole_grant(client: TestClient, db: Any) -> None:
    verifier, challenge = pkce_pair()
    form = {
        "grant_type": "authorization_code",
        "code": _code(client, challenge),
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    first = _token(client, form).json()["refresh_token"]
    rotated = _token(client, {"grant_type": "refresh_token", "refresh_token": first}).json()

    auth = (SANDBOX_CLIENT_ID, sandbox_client_secret(get_settings()))
    revoked = client.post("/sandbox/oauth/revoke", data={"token": first}, auth=auth)
    assert revoked.status_code == 200
    # Unknown tokens are answered the same (RFC 7009 section 2.2).
    assert client.post("/sandbox/oauth/revoke", data={"token": "x"}, auth=auth).status_code == 200
    assert client.post("/sandbox/oauth/revoke", data={"token": "x"}).status_code == 401
    refused = _token(
        client, {"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]}
    )
    assert refused.json()["error"] == "invalid_grant"


def test_a_used_refresh_token_is_accepted_again_within_the_grace_period(
    client: TestClient, monkeypatch: Any
) -> None:
    monkeypatch.setattr(get_settings(), "sandbox_refresh_reuse_grace_seconds", 30)
    verifier, challenge = pkce_pair()
    form = {
        "grant_type": "authorization_code",
        "code": _code(client, challenge),
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    first = _token(client, form).json()["refresh_token"]
    refresh = {"grant_type": "refresh_token", "refresh_token": first}
    assert _token(client, refresh).status_code == 200
    # The answer was lost: the client retries with the same token, within the grace period.
    retried = _token(client, refresh)
    assert retried.status_code == 200
    assert retried.json()["refresh_token"] != first
    with shifted(timedelta(seconds=31)):
        late = _token(client, refresh)
        assert late.json()["error"] == "invalid_grant"
        # Past the grace period a reuse is theft: the whole grant is revoked.
        after = _token(
            client,
            {"grant_type": "refresh_token", "refresh_token": retried.json()["refresh_token"]},
        )
        assert after.json()["error"] == "invalid_grant"
