"""The audit log: connects, callbacks, refreshes, disconnects, and account events.

Rows keep the provider and user ids as plain values: deleting a provider (or a user) does not
delete what was audited about it.
"""

from __future__ import annotations

import logging
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core import db
from dashtam.models import AuditLog
from dashtam.schemas.audit import AuditLogsPublic
from dashtam.services.context import RequestContext
from dashtam.services.paging import paged
from dashtam.services.providers import OWNED_PROVIDER, require_provider
from dashtam.services.reads import Reader, as_dicts, for_caller

_log = logging.getLogger("dashtam.audit")


class AuditAction(StrEnum):
    CONNECT = "connect"
    CALLBACK = "callback"
    REFRESH = "refresh"
    DISCONNECT = "disconnect"
    REGISTER = "register"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    REFRESH_TOKEN_REUSE = "refresh_token_reuse"
    LOGOUT = "logout"
    SESSION_REVOKED = "session_revoked"
    PASSWORD_CHANGE = "password_change"
    SYNC = "sync"


def _row(
    *,
    provider_id: uuid.UUID | None,
    user_id: uuid.UUID | None,
    action: AuditAction,
    context: RequestContext,
    details: dict[str, Any],
) -> AuditLog:
    return AuditLog(
        provider_id=provider_id,
        user_id=user_id,
        action=action.value,
        details=details,
        ip_address=(context.ip_address or None) and context.ip_address[:64],
        user_agent=(context.user_agent or None) and _printable(context.user_agent)[:500],
    )


def record(
    *,
    session: AsyncSession,
    provider_id: uuid.UUID | None,
    user_id: uuid.UUID | None,
    action: AuditAction,
    context: RequestContext,
    **details: Any,
) -> None:
    """Add an audit row to the caller's transaction (the caller commits)."""
    session.add(
        _row(
            provider_id=provider_id,
            user_id=user_id,
            action=action,
            context=context,
            details=details,
        )
    )


async def record_separately(
    *,
    provider_id: uuid.UUID | None,
    user_id: uuid.UUID | None,
    action: AuditAction,
    context: RequestContext,
    **details: Any,
) -> bool:
    """Write an audit row in a transaction of its own; False (and a log line) if that fails.

    For events whose own writes are already committed and must stay so (a rotated provider
    grant, a login): a failing audit write must not undo them. Call it when the caller's own
    session has no transaction open, so this one neither waits for it nor holds a second
    connection meanwhile.
    """
    session = db.SessionLocal()
    try:
        record(
            session=session,
            provider_id=provider_id,
            user_id=user_id,
            action=action,
            context=context,
            **details,
        )
        await session.commit()
    except Exception as exc:  # the audited event already happened
        _log.error(
            "audit row not written (action=%s, provider=%s, user=%s): %s",
            action.value,
            provider_id,
            user_id,
            type(exc).__name__,
        )
        return False
    finally:
        await db.close_quietly(session)
    return True


def _printable(text: str) -> str:
    return "".join(ch for ch in text if ord(ch) >= 32)


async def list_audit_logs(
    *, reader: Reader, provider_id: uuid.UUID, page: int, size: int
) -> AuditLogsPublic:
    """A page of the provider's audit trail, newest first; 404 unless the provider is the
    caller's (asked only when the page is empty: the page is read through that ownership)."""
    rows, total = await reader.page(_PAGE, {"provider_id": provider_id}, page=page, size=size)
    if not rows:
        await require_provider(
            connection=reader.connection, user=reader.user, provider_id=provider_id
        )
    return AuditLogsPublic.model_validate(
        {"items": as_dicts(rows), "total": total, "page": page, "size": size}
    )


_PAGE = for_caller(
    paged(
        select(
            AuditLog.id,
            AuditLog.provider_id,
            AuditLog.action,
            AuditLog.details,
            AuditLog.ip_address,
            AuditLog.user_agent,
            AuditLog.created_at,
        )
        .where(AuditLog.provider_id.in_(OWNED_PROVIDER))
        .order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
    )
)
