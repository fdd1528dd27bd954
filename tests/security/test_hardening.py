"""Production hardening: redirect URIs from DASHTAM_PUBLIC_URL, the sandbox and /docs off in
production, no caching of API answers, the usual security headers."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from dashtam.core.config import Environment, build_settings, get_settings
from dashtam.main import create_app
from tests.support.accounts import Account, add_provider, register_and_login


@pytest.fixture
def account(client: TestClient) -> Account:
    return register_and_login(client)


PRODUCTION = {
    "env": Environment.PRODUCTION,
    "database_url": "postgresql://dashtam@db/dashtam",
    "secret_key": "s" * 40,
    "encryption_keys": "k1:" + "A" * 43 + "=",
}


def test_the_redirect_uri_comes_from_the_public_url_not_the_host_header(
    client: TestClient, account: Account
) -> None:
    provider = add_provider(client, account)
    started = client.post(
        f"/api/v1/providers/{provider['id']}/authorization",
        headers={**account.headers, "Host": "attacker.example"},
    )
    assert started.status_code == 201, started.text
    url = started.json()["authorization_url"]
    assert "attacker.example" not in url
    public = get_settings().public_url
    assert url.startswith(f"{public}/sandbox/oauth/authorize?")
    redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    assert redirect_uri == (f"{public}/api/v1/providers/{provider['id']}/authorization/callback")


def test_production_turns_the_sandbox_and_docs_off_unless_enabled() -> None:
    production = build_settings(**PRODUCTION)
    assert not production.sandbox_is_enabled
    assert not production.docs_are_enabled
    enabled = build_settings(**PRODUCTION, sandbox_enabled=True, docs_enabled=True)
    assert enabled.sandbox_is_enabled
    assert enabled.docs_are_enabled
    assert build_settings(env=Environment.DEVELOPMENT, data_dir="/tmp/x").sandbox_is_enabled


def test_an_app_without_the_sandbox_or_docs_serves_neither(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "sandbox_enabled", False)
    monkeypatch.setattr(settings, "docs_enabled", False)
    locked_down = TestClient(create_app())  # no lifespan: nothing here touches the database

    for path in ("/sandbox/oauth/authorize", "/docs", "/openapi.json", "/redoc"):
        assert locked_down.get(path).status_code == 404, path
    assert locked_down.post("/sandbox/oauth/token").status_code == 404
    types = locked_down.get("/api/v1/provider-types").json()["items"]
    sandbox = next(item for item in types if item["key"] == "sandbox")
    assert sandbox["configured"] is False


def test_api_answers_are_not_cached_and_carry_security_headers(
    client: TestClient, account: Account
) -> None:
    login = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": account.password}
    )
    for response in (login, client.get("/api/v1/auth/me", headers=account.headers)):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["content-security-policy"]
    # The OpenAPI page loads its scripts from a CDN: no CSP there, the rest still applies.
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "content-security-policy" not in docs.headers
    assert docs.headers["x-frame-options"] == "DENY"


def test_hsts_only_when_served_over_https(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "public_url", "https://dashtam.example.com")
    over_https = TestClient(create_app()).get("/health/live")
    assert over_https.headers["strict-transport-security"].startswith("max-age=")
    monkeypatch.setattr(settings, "public_url", "http://127.0.0.1:8000")
    assert "strict-transport-security" not in TestClient(create_app()).get("/health/live").headers
