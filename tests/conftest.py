"""Dashtam's test environment. The database side is pgharness's, configured in pyproject.toml.

``[tool.pytest.ini_options]`` names the schema (``alembic:alembic.ini``), the app's
``SessionLocal`` and the app; pgharness starts (or connects to) PostgreSQL, builds the template
and gives every test its own rolled-back transaction. What stays here is Dashtam's own
environment, set before any test module imports Dashtam (its settings are read at import),
and the fake Schwab boundary.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import httpx
import pytest

pytest_plugins = ["pytester"]

# Generated secrets, argon2id at a cheap cost (still argon2id), Schwab credentials for its
# fake. No database URL: SessionLocal is rebound to each test's connection by pgharness.
os.environ["DASHTAM_ENV"] = "test"
os.environ["DASHTAM_PASSWORD_HASH_TIME_COST"] = "1"
os.environ["DASHTAM_PASSWORD_HASH_MEMORY_KIB"] = "1024"
# Many tests register several users from one client address; the limits' own tests lower them.
os.environ["DASHTAM_REGISTER_MAX_PER_ADDRESS"] = "1000"
os.environ["DASHTAM_AUTH_REFRESH_MAX_PER_ADDRESS"] = "1000"
os.environ["DASHTAM_SANDBOX_AUTHORIZE_MAX_PER_ADDRESS"] = "1000"
os.environ["DASHTAM_SCHWAB_CLIENT_ID"] = "schwab-test-client"
os.environ["DASHTAM_SCHWAB_CLIENT_SECRET"] = "schwab-test-secret"


@pytest.fixture
def schwab_transport() -> Iterator[Callable[[httpx.MockTransport], None]]:
    """Install an ``httpx.MockTransport`` as Schwab's HTTP boundary for this test."""
    from dashtam.main import app

    transports: dict[str, httpx.AsyncBaseTransport] = app.state.provider_transports

    def install(transport: httpx.MockTransport) -> None:
        transports["schwab"] = transport

    yield install
    transports.pop("schwab", None)
