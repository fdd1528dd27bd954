"""The jobs: what each does is one service call, in a session of its own.

- ``sync_provider`` (deferred by the API and by ``queue_due_syncs``): run the provider's
  queued sync. Its lock is the provider's, so one provider's jobs never run at once.
- ``refresh_provider`` (deferred by ``queue_due_refreshes``): refresh a provider's tokens.
- periodic, every minute: ``queue_due_syncs`` and ``queue_due_refreshes``; every hour:
  ``purge_expired_rows``. Each has a queueing lock: however many workers run the periodic
  deferrer, one of each waits at a time.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict

from procrastinate import RetryStrategy

from dashtam.core import db
from dashtam.core.config import get_settings
from dashtam.jobs.app import job_app
from dashtam.services import purge, scheduled_refresh
from dashtam.services import sync as sync_service
from dashtam.services.context import HttpClientFactory, http_clients
from dashtam.services.job_queue import QUEUE, TaskName

_log = logging.getLogger("dashtam.jobs")
# Unexpected failures (the database away for a moment) are tried again; a sync records its
# own failures and does not raise them.
_RETRY = RetryStrategy(max_attempts=3, wait=10)


def _http() -> HttpClientFactory:
    # The sandbox is served by the app itself: a worker reaches it in-process too.
    from dashtam.main import app

    return http_clients(app.state.provider_transports)


@job_app.task(name=TaskName.SYNC_PROVIDER.value, queue=QUEUE, retry=_RETRY)
async def sync_provider(provider_id: str) -> str | None:
    settings = get_settings()
    sync_id = await sync_service.run_next_sync(
        provider_id=uuid.UUID(provider_id),
        settings=settings,
        http=_http(),
        base_url=settings.public_url,
    )
    return str(sync_id) if sync_id else None


@job_app.task(name=TaskName.REFRESH_PROVIDER.value, queue=QUEUE, retry=_RETRY)
async def refresh_provider(provider_id: str) -> bool:
    settings = get_settings()
    return await scheduled_refresh.refresh_provider(
        provider_id=uuid.UUID(provider_id),
        settings=settings,
        http=_http(),
        base_url=settings.public_url,
    )


@job_app.periodic(cron="* * * * *", periodic_id="queue_due_syncs")
@job_app.task(name="dashtam.queue_due_syncs", queue=QUEUE, queueing_lock="dashtam.queue_due_syncs")
async def queue_due_syncs(timestamp: int) -> int:
    async with db.SessionLocal() as session:
        queued = await sync_service.queue_due_syncs(session=session, settings=get_settings())
    if queued:
        _log.info("queued %d sync(s)", queued)
    return queued


@job_app.periodic(cron="* * * * *", periodic_id="queue_due_refreshes")
@job_app.task(
    name="dashtam.queue_due_refreshes", queue=QUEUE, queueing_lock="dashtam.queue_due_refreshes"
)
async def queue_due_refreshes(timestamp: int) -> int:
    async with db.SessionLocal() as session:
        queued = await scheduled_refresh.queue_due_refreshes(
            session=session, settings=get_settings()
        )
    if queued:
        _log.info("queued %d token refresh(es)", queued)
    return queued


@job_app.periodic(cron="17 * * * *", periodic_id="purge_expired_rows")
@job_app.task(
    name="dashtam.purge_expired_rows", queue=QUEUE, queueing_lock="dashtam.purge_expired_rows"
)
async def purge_expired_rows(timestamp: int) -> dict[str, int]:
    async with db.SessionLocal() as session:
        report = await purge.purge_expired(session=session, settings=get_settings())
    return asdict(report)
