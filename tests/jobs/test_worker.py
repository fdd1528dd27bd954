"""Jobs run by real procrastinate workers against the test's own database.

Each test has a database of its own (``pg_isolation("database")``): the workers connect to
it like production workers do, and see only what the API committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import procrastinate
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from dashtam.jobs.app import job_app
from dashtam.jobs.worker import run_worker
from dashtam.models import SandboxAuthorizationCode, Sync, SyncStatus
from dashtam.services.job_queue import TaskName, enqueue_for_provider
from tests.support.database import PgDatabase, libpq_url
from tests.support.flows import Connected, json_of, register_connect
from tests.support.gate import gated_provider

pytestmark = pytest.mark.pg_isolation("database")


@pytest.fixture(autouse=True)
def _syncs_left_to_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "sync_in_api", False)


@asynccontextmanager
async def _queue(database: PgDatabase) -> AsyncIterator[procrastinate.App]:
    connector = procrastinate.PsycopgConnector(conninfo=libpq_url(database.sync_url))
    with job_app.replace_connector(connector) as app:
        async with app.open_async():
            yield app


async def _work(database: PgDatabase) -> None:
    await asyncio.wait_for(run_worker(libpq_url(database.sync_url), wait=False), 60)


async def _jobs(session: AsyncSession, task: str) -> list[str]:
    """The statuses of ``task``'s jobs, oldest first (a worker also defers periodic ones)."""
    rows = await session.scalars(
        text("SELECT status FROM procrastinate_jobs WHERE task_name = :task ORDER BY id"),
        {"task": task},
    )
    return list(rows)


async def _sync_status(http: httpx.AsyncClient, user: Connected, sync_id: str) -> dict[str, Any]:
    return json_of(
        await http.get(
            f"/api/v1/providers/{user.provider_id}/syncs/{sync_id}", headers=user.headers
        )
    )


async def test_a_requested_sync_is_run_by_a_worker(
    async_client: httpx.AsyncClient, async_db: AsyncSession, pg_database: PgDatabase
) -> None:
    user = await register_connect(async_client)
    started = await async_client.post(
        f"/api/v1/providers/{user.provider_id}/syncs", headers=user.headers
    )
    assert started.status_code == 202
    assert (await _sync_status(async_client, user, started.json()["id"]))["status"] == "queued"

    await _work(pg_database)

    done = await _sync_status(async_client, user, started.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["accounts"] == 2
    accounts = json_of(await async_client.get("/api/v1/accounts", headers=user.headers))
    assert accounts["total"] == 2
    assert await _jobs(async_db, TaskName.SYNC_PROVIDER) == ["succeeded"]


async def test_two_workers_never_run_one_providers_sync_at_once(
    async_client: httpx.AsyncClient, async_db: AsyncSession, pg_database: PgDatabase
) -> None:
    user = await register_connect(async_client)
    started = await async_client.post(
        f"/api/v1/providers/{user.provider_id}/syncs", headers=user.headers
    )
    assert started.status_code == 202
    with gated_provider("sandbox", "/sandbox/api/accounts") as gate:
        async with _queue(pg_database) as app:
            first = asyncio.create_task(app.run_worker_async(wait=False, name="first"))
            await gate.wait_for(1)  # the first worker's sync is reading the provider

            # Meanwhile the schedule asks again for the same provider: the API refuses a
            # second sync, and a second job (its queueing lock free again, the first job
            # being under way) waits behind the first one's provider lock.
            again = await async_client.post(
                f"/api/v1/providers/{user.provider_id}/syncs", headers=user.headers
            )
            assert again.status_code == 409
            provider_id = await async_db.scalar(select(Sync.provider_id))
            assert provider_id is not None
            assert await enqueue_for_provider(
                session=async_db, task=TaskName.SYNC_PROVIDER, provider_id=provider_id
            )
            await async_db.commit()

            await asyncio.wait_for(app.run_worker_async(wait=False, name="second"), 30)
            assert gate.waiting == 1  # the second worker did not start the provider's job
            assert await _jobs(async_db, TaskName.SYNC_PROVIDER) == ["doing", "todo"]
            gate.released.set()
            await asyncio.wait_for(first, 60)

    assert gate.waiting == 1  # one sync read the provider; the second job found none queued
    assert await _jobs(async_db, TaskName.SYNC_PROVIDER) == ["succeeded", "succeeded"]
    syncs = (await async_db.scalars(select(Sync))).all()
    assert [s.status for s in syncs] == [SyncStatus.SUCCEEDED]


async def test_the_periodic_job_syncs_a_newly_connected_provider(
    async_client: httpx.AsyncClient, pg_database: PgDatabase
) -> None:
    user = await register_connect(async_client)
    async with _queue(pg_database) as app:
        await app.configure_task("dashtam.queue_due_syncs").defer_async(timestamp=0)
    await _work(pg_database)
    accounts = json_of(await async_client.get("/api/v1/accounts", headers=user.headers))
    assert accounts["total"] == 2
    aid = accounts["items"][0]["id"]
    transactions = json_of(
        await async_client.get(f"/api/v1/accounts/{aid}/transactions", headers=user.headers)
    )
    assert transactions["items"]

    # Synced just now: the next tick queues nothing for it.
    async with _queue(pg_database) as app:
        await app.configure_task("dashtam.queue_due_syncs").defer_async(timestamp=60)
    await _work(pg_database)
    logs = json_of(
        await async_client.get(
            f"/api/v1/providers/{user.provider_id}/audit-logs", headers=user.headers
        )
    )
    assert [row["action"] for row in logs["items"]].count("sync") == 1


async def test_a_token_near_expiry_is_refreshed_without_a_request(
    async_client: httpx.AsyncClient, pg_database: PgDatabase
) -> None:
    user = await register_connect(async_client)
    status_path = f"/api/v1/providers/{user.provider_id}/authorization"
    before = json_of(await async_client.get(status_path, headers=user.headers))
    # Not yet within the margin: nothing to do.
    async with _queue(pg_database) as app:
        await app.configure_task("dashtam.queue_due_refreshes").defer_async(timestamp=0)
    await _work(pg_database)
    assert json_of(await async_client.get(status_path, headers=user.headers))["refresh_count"] == 0

    lifetime = get_settings().sandbox_access_token_seconds
    with shifted(timedelta(seconds=lifetime - 60)):
        async with _queue(pg_database) as app:
            await app.configure_task("dashtam.queue_due_refreshes").defer_async(timestamp=60)
        await _work(pg_database)
        after = json_of(await async_client.get(status_path, headers=user.headers))
    assert after["refresh_count"] == 1
    assert after["expires_at"] > before["expires_at"]
    assert after["needs_refresh"] is False


async def test_the_purge_job_deletes_expired_rows(
    async_client: httpx.AsyncClient, async_db: AsyncSession, pg_database: PgDatabase
) -> None:
    await register_connect(async_client)
    assert await async_db.scalar(select(func.count()).select_from(SandboxAuthorizationCode)) == 1
    with shifted(timedelta(days=2)):
        async with _queue(pg_database) as app:
            await app.configure_task("dashtam.purge_expired_rows").defer_async(timestamp=0)
        await _work(pg_database)
    assert await async_db.scalar(select(func.count()).select_from(SandboxAuthorizationCode)) == 0
    assert "succeeded" in await _jobs(async_db, "dashtam.purge_expired_rows")
