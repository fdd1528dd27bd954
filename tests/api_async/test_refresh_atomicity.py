"""A refresh writes the new tokens, the counters and the audit row together, or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.database import raw_connection
from tests.support.flows import register_connect

_STATE = """
SELECT t.key_id, t.access_token_encrypted, t.refresh_token_encrypted, t.expires_at,
       c.status, c.refresh_count, c.last_refreshed_at, c.consecutive_failures,
       (SELECT count(*) FROM audit_logs a WHERE a.provider_id = p.id)
FROM providers p
JOIN provider_connections c ON c.provider_id = p.id
JOIN provider_tokens t ON t.connection_id = c.id
WHERE p.id = %s
"""


@pytest.fixture
def failing_refresh_audit(pg_database: Any) -> Iterator[None]:
    """A trigger in this test's database that makes writing a refresh's audit row fail."""
    with raw_connection(pg_database, autocommit=True) as conn:
        conn.execute(
            """
            CREATE FUNCTION refuse_refresh_audit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.action = 'refresh' THEN
                    RAISE EXCEPTION 'injected failure writing the refresh audit row';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_refresh_audit BEFORE INSERT ON audit_logs
                FOR EACH ROW EXECUTE FUNCTION refuse_refresh_audit();
            """
        )
        try:
            yield
        finally:
            conn.execute(
                "DROP TRIGGER refuse_refresh_audit ON audit_logs;"
                " DROP FUNCTION refuse_refresh_audit();"
            )


@pytest.mark.pg_isolation("database")
async def test_failure_writing_the_audit_row_leaves_tokens_and_counters_untouched(
    async_client: httpx.AsyncClient, pg_database: Any, request: pytest.FixtureRequest
) -> None:
    connected = await register_connect(async_client)
    with raw_connection(pg_database) as conn:
        before = conn.execute(_STATE, (connected.provider_id,)).fetchone()
    assert before is not None

    request.getfixturevalue("failing_refresh_audit")
    response = await async_client.post(
        f"/api/v1/providers/{connected.provider_id}/token-refreshes", headers=connected.headers
    )

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "injected failure" not in response.text  # database errors are not echoed
    with raw_connection(pg_database) as conn:
        after = conn.execute(_STATE, (connected.provider_id,)).fetchone()
    assert after == before  # same ciphertexts, counters, status and audit count
