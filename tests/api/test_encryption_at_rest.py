"""Provider tokens are not readable in the database (the raw columns are checked)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.accounts import Account, add_provider
from tests.support.database import PgDatabase, raw_connection

ACCESS = "plaintext-access-token-4b1d"
REFRESH = "plaintext-refresh-token-9c3e"


def _schwab(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "access_token": ACCESS,
            "refresh_token": REFRESH,
            "expires_in": 1800,
            "token_type": "Bearer",
        },
    )


@pytest.mark.pg_isolation("database")  # the raw connection must see the app's commits
def test_tokens_are_stored_encrypted(
    client: TestClient,
    account: Account,
    schwab_transport: Callable[[httpx.MockTransport], None],
    pg_database: PgDatabase,
) -> None:
    schwab_transport(httpx.MockTransport(_schwab))
    pid = add_provider(client, account, key="schwab", alias="Schwab")["id"]
    state = client.post(f"/api/v1/providers/{pid}/authorization", headers=account.headers).json()[
        "state"
    ]
    callback = client.get(
        f"/api/v1/providers/{pid}/authorization/callback", params={"code": "c", "state": state}
    )
    assert callback.status_code == 200

    with raw_connection(pg_database) as conn:
        rows = conn.execute(
            "SELECT t.key_id, t.access_token_encrypted, t.refresh_token_encrypted"
            " FROM provider_tokens t JOIN provider_connections c ON c.id = t.connection_id"
            " WHERE c.provider_id = %s",
            (pid,),
        ).fetchall()
        dump = conn.execute("SELECT row_to_json(t)::text FROM provider_tokens t").fetchall()
    assert len(rows) == 1
    key_id, access, refresh = rows[0]
    assert key_id == "test1"
    for secret in (ACCESS, REFRESH):
        assert secret.encode() not in bytes(access)
        assert secret.encode() not in bytes(refresh)
        assert secret.encode().hex() not in dump[0][0]
        assert secret not in dump[0][0]
    assert len(bytes(access)) == 12 + len(ACCESS) + 16  # nonce + ciphertext + GCM tag
