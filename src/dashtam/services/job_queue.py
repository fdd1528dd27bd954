"""Putting a job on the queue inside the caller's transaction.

The job engine is procrastinate (its schema is migration 0005; its tasks and workers live in
``dashtam.jobs``). A job deferred here becomes visible to workers when the caller commits,
together with the rows it is about, and disappears with them on a rollback: no worker ever
picks up a job for a sync row that was never committed.
"""

from __future__ import annotations

import json
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

QUEUE = "dashtam"


class TaskName(StrEnum):
    SYNC_PROVIDER = "dashtam.sync_provider"
    REFRESH_PROVIDER = "dashtam.refresh_provider"


def provider_lock(provider_id: uuid.UUID) -> str:
    """Jobs holding one provider's lock run one at a time, on however many workers."""
    return f"provider:{provider_id}"


def queueing_lock(task: TaskName, provider_id: uuid.UUID) -> str:
    """At most one job of ``task`` for a provider waits in the queue at a time."""
    return f"{task.value}:{provider_id}"


_DEFER = text(
    "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW("
    ":queue, :task, 0, :lock, :queueing_lock, CAST(:args AS jsonb), NULL::timestamptz"
    ")]::procrastinate_job_to_defer_v1[]))"
)


async def enqueue_for_provider(
    *, session: AsyncSession, task: TaskName, provider_id: uuid.UUID, **args: Any
) -> bool:
    """Defer ``task`` for a provider in the caller's transaction; False if one already waits.

    The job holds the provider's lock (one at a time per provider) and its queueing lock (one
    waiting per provider and task): a second request while one waits adds nothing.
    """
    try:
        async with session.begin_nested():
            await session.execute(
                _DEFER,
                {
                    "queue": QUEUE,
                    "task": task.value,
                    "lock": provider_lock(provider_id),
                    "queueing_lock": queueing_lock(task, provider_id),
                    "args": json.dumps({"provider_id": str(provider_id), **args}),
                },
            )
    except IntegrityError:
        return False
    return True
