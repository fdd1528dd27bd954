"""``/health``: the service and its database."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from dashtam.core import db
from dashtam.core.errors import problem_response

router = APIRouter(tags=["health"])


@router.get("/health", response_model=None)
async def health() -> dict[str, Any] | JSONResponse:
    try:
        async with db.SessionLocal() as session:
            await session.execute(text("SELECT 1"))
    except Exception:  # any failure to reach the database means "unavailable"
        return problem_response(
            503, "The database is unreachable.", service="ok", database="unavailable"
        )
    return {"status": "ok", "service": "ok", "database": "ok"}
