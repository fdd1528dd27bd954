"""Fixtures for the sync API tests: a registered, logged-in user."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.support.accounts import Account, register_and_login


@pytest.fixture
def account(client: TestClient) -> Account:
    return register_and_login(client)


@pytest.fixture
def make_account(client: TestClient) -> Callable[[], Account]:
    return lambda: register_and_login(client)
