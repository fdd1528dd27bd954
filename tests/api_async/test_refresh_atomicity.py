"""A refreshed grant reaches the database whatever else fails: the provider has spent the old one.

The provider rotates the refresh token when it answers; from then on only the new one works.
So the new grant is committed on its own (the audit row is written afterwards, separately),
a connection lost while committing it is retried, and when it cannot be stored the answer and
the connection's stored state say so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.support.database import raw_connection
from tests.support.flows import register_connect

_STATE = """
SELECT t.refresh_token_encrypted, c.status, c.refresh_count, c.last_error,
       (SELECT count(*) FROM audit_logs a WHERE a.provider_id = p.id AND a.action = 'refresh')
FROM providers p
JOIN provider_connections c ON c.provider_id = p.id
JOIN provider_tokens t ON t.connection_id = c.id
WHERE p.id = %s
"""


def _state(pg_database: Any, provider_id: str) -> tuple[Any, ...]:
    with raw_connection(pg_database) as conn:
        row = conn.execute(_STATE, (provider_id,)).fetchone()
    assert row is not None
    return tuple(row)


@contextmanager
def _trigger(pg_database: Any, table: str, event: str, body: str) -> Iterator[None]:
    """A trigger in this test's database running ``body`` (PL/pgSQL) on ``event`` of ``table``."""
    with raw_connection(pg_database, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE injected_fault_count")
        conn.execute(
            f"""
            CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {body}
                RETURN NEW;
            END $$;
            CREATE TRIGGER injected_fault BEFORE {event} ON {table}
                FOR EACH ROW EXECUTE FUNCTION injected_fault();
            """
        )
        try:
            yield
        finally:
            conn.execute(
                f"DROP TRIGGER injected_fault ON {table}; DROP FUNCTION injected_fault();"
                " DROP SEQUENCE injected_fault_count;"
            )


@pytest.fixture
def fault(pg_database: Any) -> Callable[[str, str, str], Any]:
    return lambda table, event, body: _trigger(pg_database, table, event, body)


@pytest.mark.pg_isolation("database")
async def test_a_failing_audit_write_keeps_the_rotated_grant(
    async_client: httpx.AsyncClient, pg_database: Any, fault: Callable[..., Any]
) -> None:
    connected = await register_connect(async_client)
    url = f"/api/v1/providers/{connected.provider_id}/token-refreshes"
    token_before, _, count_before, _, audited_before = _state(pg_database, connected.provider_id)

    with fault(
        "audit_logs",
        "INSERT",
        "IF NEW.action = 'refresh' THEN RAISE EXCEPTION 'injected audit failure'; END IF;",
    ):
        response = await async_client.post(url, headers=connected.headers)

    assert response.status_code == 201, response.text
    token_after, status, count_after, _, audited_after = _state(pg_database, connected.provider_id)
    assert token_after != token_before  # the rotated refresh token is stored
    assert (status, count_after, audited_after) == ("active", count_before + 1, audited_before)
    # The stored refresh token is the one the provider issued last: refreshing still works.
    assert (await async_client.post(url, headers=connected.headers)).status_code == 201


@pytest.mark.pg_isolation("database")
async def test_a_connection_lost_while_storing_the_grant_is_retried(
    async_client: httpx.AsyncClient, pg_database: Any, fault: Callable[..., Any]
) -> None:
    connected = await register_connect(async_client)
    url = f"/api/v1/providers/{connected.provider_id}/token-refreshes"
    token_before, *_ = _state(pg_database, connected.provider_id)

    # The first write of the new grant loses its connection (the server ends the backend).
    with fault(
        "provider_tokens",
        "UPDATE",
        "IF nextval('injected_fault_count') = 1 THEN"
        " PERFORM pg_terminate_backend(pg_backend_pid()); END IF;",
    ):
        response = await async_client.post(url, headers=connected.headers)

    assert response.status_code == 201, response.text
    assert response.json()["refresh_count"] == 1
    token_after, status, count, last_error, audited = _state(pg_database, connected.provider_id)
    assert token_after != token_before
    assert (status, count, last_error, audited) == ("active", 1, None, 1)
    again = await async_client.post(url, headers=connected.headers)
    assert again.status_code == 201, again.text
    assert again.json()["refresh_count"] == 2


@pytest.mark.pg_isolation("database")
async def test_a_grant_that_cannot_be_stored_is_reported_truthfully(
    async_client: httpx.AsyncClient, pg_database: Any, fault: Callable[..., Any]
) -> None:
    connected = await register_connect(async_client)
    url = f"/api/v1/providers/{connected.provider_id}/token-refreshes"
    token_before, *_ = _state(pg_database, connected.provider_id)

    with fault("provider_tokens", "UPDATE", "RAISE EXCEPTION 'injected storage failure';"):
        response = await async_client.post(url, headers=connected.headers)

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["rotation_stored"] is False
    assert "authorize the provider again" in problem["detail"]
    assert "injected" not in response.text  # database errors are not echoed
    token_after, status, count, last_error, _ = _state(pg_database, connected.provider_id)
    assert token_after == token_before
    assert (status, count) == ("error", 0)
    assert "could not be stored" in last_error
    shown = await async_client.get(
        f"/api/v1/providers/{connected.provider_id}/authorization", headers=connected.headers
    )
    assert shown.json()["status"] == "error"
