"""No token, password, code, state, client secret or key ever reaches a log line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient

from dashtam.core import log_redaction
from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from dashtam.core.crypto import Keyring, Sealed
from dashtam.providers.registry import sandbox_client_secret
from tests.support.accounts import add_provider, register_and_login
from tests.support.database import libpq_url

_CALLBACK = "/api/v1/providers/x/authorization/callback"


@pytest.fixture
def everything_at_debug(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger (Dashtam, httpx, httpcore, SQLAlchemy, uvicorn, asyncio...) at DEBUG."""
    names = ["", "dashtam", "httpx", "httpcore", "sqlalchemy", "sqlalchemy.engine"]
    names += ["sqlalchemy.pool", "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio"]
    names += list(logging.root.manager.loggerDict)
    previous = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    yield caplog
    for name, level in previous.items():
        logging.getLogger(name).setLevel(level)


def _provider_secrets(sync_url: str, keyring: Keyring) -> list[str]:
    """The provider's tokens and the PKCE verifiers, opened from the database."""
    found: list[str] = []
    with psycopg.connect(libpq_url(sync_url)) as conn:
        for connection_id, key_id, access, refresh in conn.execute(
            "SELECT connection_id, key_id, access_token_encrypted, refresh_token_encrypted"
            " FROM provider_tokens"
        ):
            for field, sealed in (("access", access), ("refresh", refresh)):
                aad = f"provider-token:{connection_id}:{field}"
                found.append(keyring.decrypt_text(Sealed(key_id, sealed), aad=aad))
        for state_id, key_id, verifier in conn.execute(
            "SELECT id, key_id, code_verifier_encrypted FROM authorization_states"
            " WHERE code_verifier_encrypted IS NOT NULL"
        ):
            aad = f"authorization-state:{state_id}"
            found.append(keyring.decrypt_text(Sealed(key_id, bytes(verifier)), aad=aad))
    return found


@pytest.mark.pg_isolation("database")
def test_full_flow_at_debug_logs_no_secret(
    client: TestClient, pg_database: Any, everything_at_debug: pytest.LogCaptureFixture
) -> None:
    settings = get_settings()
    keyring = Keyring.parse(settings.keyring_spec)
    secrets: dict[str, str] = {}

    account = register_and_login(client)
    secrets |= {"password": account.password}
    secrets |= {"access token": account.access_token, "refresh token": account.refresh_token}
    provider = add_provider(client, account)
    pid = provider["id"]

    start = client.post(f"/api/v1/providers/{pid}/authorization", headers=account.headers)
    assert start.status_code == 201
    secrets["state"] = start.json()["state"]
    consent = client.get(start.json()["authorization_url"], follow_redirects=False)
    assert consent.status_code == 302
    secrets["authorization code"] = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
    callback = client.get(consent.headers["location"])
    assert callback.status_code == 200, callback.text
    first_tokens = _provider_secrets(pg_database.sync_url, keyring)

    refreshed = client.post(f"/api/v1/providers/{pid}/token-refreshes", headers=account.headers)
    assert refreshed.status_code == 201, refreshed.text
    second_tokens = _provider_secrets(pg_database.sync_url, keyring)
    for number, value in enumerate(first_tokens + second_tokens):
        secrets[f"provider secret {number}"] = value

    disconnected = client.delete(f"/api/v1/providers/{pid}/authorization", headers=account.headers)
    assert disconnected.status_code == 204
    # The reuse below ends the session, and with it this access token: disconnect first.
    rotated = client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert rotated.status_code == 200
    secrets["rotated refresh token"] = rotated.json()["refresh_token"]
    with shifted(timedelta(seconds=get_settings().auth_refresh_retry_seconds + 1)):
        reused = client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert reused.status_code == 401

    failed = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": "Wrong-" + account.password}
    )
    assert failed.status_code == 401
    secrets["wrong password"] = "Wrong-" + account.password
    for body in (failed.text, reused.text):
        assert account.password not in body
        assert account.refresh_token not in body

    secrets["secret key"] = settings.signing_key
    secrets["sandbox client secret"] = sandbox_client_secret(settings)
    for entry in settings.keyring_spec.split(","):
        secrets[f"encryption key {entry.split(':')[0]}"] = entry.split(":", 1)[1]

    records = everything_at_debug.records
    assert len(records) > 50  # the capture really saw the flow (requests, SQL, ...)
    text = "\n".join(
        everything_at_debug.handler.format(record) + (record.exc_text or "") for record in records
    )
    leaked = [name for name, value in secrets.items() if value and value in text]
    assert leaked == [], f"secrets in the logs: {leaked}"


def test_uvicorn_access_log_line_keeps_no_callback_code_or_state() -> None:
    from uvicorn.logging import AccessFormatter

    log_redaction.install()  # what create_app() does
    record = logging.getLogger("uvicorn.access").makeRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"{_CALLBACK}?code=C0DE&state=ST4TE", "1.1", 200),
        None,
    )
    line = AccessFormatter('%(client_addr)s "%(request_line)s" %(status_code)s').format(record)
    assert "C0DE" not in line
    assert "ST4TE" not in line
    assert f"{_CALLBACK}?code=[REDACTED]&state=[REDACTED]" in line


def test_a_logged_traceback_is_scrubbed_too() -> None:
    log_redaction.install()  # what create_app() does
    logger = logging.getLogger("dashtam.tests.traceback")
    try:
        raise RuntimeError("token endpoint said refresh_token=R3FR3SH for Bearer 4CC3SS.T0K3N")
    except RuntimeError:
        record = logger.makeRecord(
            logger.name, logging.ERROR, __file__, 1, "refresh failed", (), sys.exc_info()
        )
    line = logging.Formatter("%(message)s").format(record)
    assert "Traceback" in line
    assert "RuntimeError" in line
    assert "R3FR3SH" not in line
    assert "4CC3SS" not in line
