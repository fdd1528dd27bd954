"""Health: ``/health`` (service and database), ``/health/live`` and ``/health/ready``.

- ``/health/live`` (liveness): the process answers; never touches the database, so a database
  outage does not get healthy workers restarted.
- ``/health/ready`` (readiness): the database answers and its schema is at Dashtam's newest
  migration; 503 ``problem+json`` otherwise, so a load balancer stops sending traffic.
- ``/health``: service and database together (kept for existing monitors).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from dashtam.core import db
from dashtam.core.errors import problem_response
from dashtam.schemas.health import Health, Liveness, Readiness

router = APIRouter(tags=["health"])
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "The database is unreachable or not migrated."}
}


@router.get("/health", response_model=Health, responses=_UNAVAILABLE)
async def health() -> dict[str, Any] | JSONResponse:
    try:
        async with db.SessionLocal() as session:
            await session.execute(text("SELECT 1"))
    except Exception:  # any failure to reach the database means "unavailable"
        return problem_response(
            503, "The database is unreachable.", service="ok", database="unavailable"
        )
    return {"status": "ok", "service": "ok", "database": "ok"}


@router.get("/health/live")
async def liveness() -> Liveness:
    return Liveness(status="ok")


@router.get("/health/ready", response_model=Readiness, responses=_UNAVAILABLE)
async def readiness() -> dict[str, Any] | JSONResponse:
    from dashtam.migrate import head_revision

    try:
        async with db.SessionLocal() as session:
            revision = await session.scalar(text("SELECT version_num FROM alembic_version"))
    except Exception:  # unreachable, or no schema at all
        return problem_response(503, "The database is unreachable.", database="unavailable")
    expected = head_revision()
    if revision != expected:
        return problem_response(
            503,
            "The database schema is not at the newest migration: run `dashtam migrate`.",
            database="outdated",
        )
    return {"status": "ready", "database": "ok", "schema_revision": revision}
