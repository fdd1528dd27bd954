"""Liveness never touches the database; readiness checks it and its schema."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from dashtam.migrate import head_revision
from tests.support.database import raw_connection


def test_liveness_answers_without_the_database(client: TestClient) -> None:
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readiness_reports_the_schema_revision(client: TestClient) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "database": "ok",
        "schema_revision": head_revision(),
    }


@pytest.mark.pg_isolation("database")
def test_an_unmigrated_database_is_not_ready(client: TestClient, pg_database: Any) -> None:
    with raw_connection(pg_database, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
        try:
            response = client.get("/health/ready")
        finally:
            conn.execute("UPDATE alembic_version SET version_num = %s", (head_revision(),))
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["database"] == "outdated"
    assert "dashtam migrate" in response.json()["detail"]
    assert client.get("/health/live").status_code == 200
