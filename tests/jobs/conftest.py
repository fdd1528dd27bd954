"""Fixtures for the job tests' sync-style half: a registered, logged-in user."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.accounts import Account, register_and_login


@pytest.fixture
def account(client: TestClient) -> Account:
    return register_and_login(client)
