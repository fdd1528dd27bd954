"""Syncing the sandbox in the async style: expiring and refused tokens, re-syncs, history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from dashtam.models import SandboxAccessToken, Transaction
from tests.support.flows import Connected, json_of, register_connect


async def _sync(http: httpx.AsyncClient, user: Connected) -> dict[str, Any]:
    started = await http.post(f"/api/v1/providers/{user.provider_id}/syncs", headers=user.headers)
    assert started.status_code == 202, started.text
    done = await http.get(
        f"/api/v1/providers/{user.provider_id}/syncs/{started.json()['id']}", headers=user.headers
    )
    assert done.status_code == 200, done.text
    return json_of(done)


async def _status(http: httpx.AsyncClient, user: Connected) -> dict[str, Any]:
    response = await http.get(
        f"/api/v1/providers/{user.provider_id}/authorization", headers=user.headers
    )
    return json_of(response)


async def test_a_token_near_expiry_is_refreshed_before_the_sync_reads(
    async_client: httpx.AsyncClient,
) -> None:
    user = await register_connect(async_client)
    lifetime = get_settings().sandbox_access_token_seconds
    # Later, within the refresh margin of the token's expiry: the sync refreshes first.
    with shifted(timedelta(seconds=lifetime - 60)):
        sync = await _sync(async_client, user)
        status = await _status(async_client, user)
    assert sync["status"] == "succeeded", sync
    assert status["refresh_count"] == 1
    assert sync["accounts"] == 2


async def test_a_token_the_provider_refuses_is_refreshed_once_and_the_sync_goes_on(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    user = await register_connect(async_client)
    # The sandbox forgets the access token Dashtam still holds as valid: its API answers 401.
    await async_db.execute(update(SandboxAccessToken).values(expires_at=func.now()))
    await async_db.commit()
    sync = await _sync(async_client, user)
    assert sync["status"] == "succeeded", sync
    assert (await _status(async_client, user))["refresh_count"] == 1


async def test_a_disconnected_provider_cannot_be_synced(async_client: httpx.AsyncClient) -> None:
    user = await register_connect(async_client)
    gone = await async_client.delete(
        f"/api/v1/providers/{user.provider_id}/authorization", headers=user.headers
    )
    assert gone.status_code == 204
    refused = await async_client.post(
        f"/api/v1/providers/{user.provider_id}/syncs", headers=user.headers
    )
    assert refused.status_code == 409
    assert "authorize" in refused.json()["detail"]


async def test_re_syncs_add_new_history_and_never_duplicate(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    user = await register_connect(async_client)
    first = await _sync(async_client, user)
    stored = await async_db.scalar(select(func.count()).select_from(Transaction))
    assert stored == first["transactions"]
    # Half a day on, the sandbox has posted new activity; the re-read overlap is upserted.
    with shifted(timedelta(hours=12)):
        second = await _sync(async_client, user)
    assert second["status"] == "succeeded", second["error"]
    after = await async_db.scalar(select(func.count()).select_from(Transaction))
    assert (after or 0) > (stored or 0)
    ids = await async_db.scalar(
        select(func.count(func.distinct(Transaction.provider_transaction_id)))
    )
    assert ids == after

    accounts = json_of(await async_client.get("/api/v1/accounts", headers=user.headers))
    aid = accounts["items"][0]["id"]
    balances = json_of(
        await async_client.get(f"/api/v1/accounts/{aid}/balances", headers=user.headers)
    )
    assert balances["total"] == 2
    newest, oldest = balances["items"]
    assert newest["as_of"] > oldest["as_of"]
    assert newest["sync_id"] == second["id"]


async def test_every_sync_is_audited(async_client: httpx.AsyncClient) -> None:
    user = await register_connect(async_client)
    sync = await _sync(async_client, user)
    logs = json_of(
        await async_client.get(
            f"/api/v1/providers/{user.provider_id}/audit-logs", headers=user.headers
        )
    )
    rows = [row for row in logs["items"] if row["action"] == "sync"]
    assert len(rows) == 1
    assert rows[0]["details"]["outcome"] == "success"
    assert rows[0]["details"]["sync_id"] == sync["id"]
    assert rows[0]["details"]["transactions"] == sync["transactions"]
