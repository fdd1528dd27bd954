"""The sandbox authorization server speaks RFC 6749 (with PKCE) to any client."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi.testclient import TestClient

from dashtam.core.config import get_settings
from dashtam.core.security import pkce_pair
from dashtam.providers.registry import SANDBOX_CLIENT_ID, sandbox_client_secret

REDIRECT = "http://client.example/cb"


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
