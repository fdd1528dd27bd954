"""The migrations build exactly the tables the models describe, and the job queue's."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.models import Base


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            # The job engine's tables come from its own schema script (migration 0005).
            "include_name": lambda name, kind, parent: not (name or "").startswith("procrastinate"),
        },
    )
    return list(compare_metadata(context, Base.metadata))


async def test_the_migrated_schema_matches_the_models(async_db: AsyncSession) -> None:
    connection = await async_db.connection()
    assert await connection.run_sync(_differences) == []


async def test_the_job_queue_schema_is_migrated_too(async_db: AsyncSession) -> None:
    found = await async_db.scalar(
        text("SELECT count(*) FROM pg_proc WHERE proname = 'procrastinate_defer_jobs_v1'")
    )
    assert found == 1
