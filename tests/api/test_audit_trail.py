"""The audit trail outlives what it audits: deleting a provider keeps its rows."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from dashtam.models import AuditLog
from tests.support.accounts import add_provider, connect, register_and_login


def test_deleting_a_provider_keeps_its_audit_trail(client: TestClient, db: Any) -> None:
    account = register_and_login(client)
    provider = add_provider(client, account)
    connect(client, account, provider["id"])
    refreshed = client.post(
        f"/api/v1/providers/{provider['id']}/token-refreshes", headers=account.headers
    )
    assert refreshed.status_code == 201

    deleted = client.delete(f"/api/v1/providers/{provider['id']}", headers=account.headers)

    assert deleted.status_code == 204
    actions = db.scalars(
        select(AuditLog.action).where(AuditLog.provider_id == uuid.UUID(provider["id"]))
    ).all()
    assert {"connect", "callback", "refresh"} <= set(actions)


def test_reading_the_audit_log_costs_one_query(client: TestClient, pg_queries: Any) -> None:
    account = register_and_login(client)
    provider = add_provider(client, account)
    connect(client, account, provider["id"])

    # The page with its total, read through the caller's open session and ownership of the
    # provider.
    with pg_queries.at_most(1):
        logs = client.get(f"/api/v1/providers/{provider['id']}/audit-logs", headers=account.headers)

    assert logs.json()["total"] == len(logs.json()["items"]) > 0
