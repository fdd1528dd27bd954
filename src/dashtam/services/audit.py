"""The audit log: one row per connect, callback, refresh and disconnect."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.models import AuditLog, User
from dashtam.services.context import RequestContext
from dashtam.services.providers import get_provider


class AuditAction(StrEnum):
    CONNECT = "connect"
    CALLBACK = "callback"
    REFRESH = "refresh"
    DISCONNECT = "disconnect"


def record(
    *,
    session: AsyncSession,
    provider_id: uuid.UUID,
    user_id: uuid.UUID,
    action: AuditAction,
    context: RequestContext,
    **details: Any,
) -> None:
    """Add an audit row to the caller's transaction (the caller commits)."""
    session.add(
        AuditLog(
            provider_id=provider_id,
            user_id=user_id,
            action=action.value,
            details=details,
            ip_address=(context.ip_address or None) and context.ip_address[:64],
            user_agent=(context.user_agent or None) and _printable(context.user_agent)[:500],
        )
    )


def _printable(text: str) -> str:
    return "".join(ch for ch in text if ord(ch) >= 32)


async def list_audit_logs(
    *, session: AsyncSession, user: User, provider_id: uuid.UUID, page: int, size: int
) -> tuple[list[AuditLog], int]:
    await get_provider(session=session, user=user, provider_id=provider_id)
    total = await session.scalar(
        select(func.count()).select_from(AuditLog).where(AuditLog.provider_id == provider_id)
    )
    rows = await session.scalars(
        select(AuditLog)
        .where(AuditLog.provider_id == provider_id)
        .order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
        .offset((page - 1) * size)
        .limit(size)
    )
    return list(rows), int(total or 0)
