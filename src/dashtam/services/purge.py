"""Deleting rows that have expired and serve nothing any more.

A plain function (``purge_expired``) so that ``dashtam purge``, a cron job or a job runner can
call it; one transaction, committed at the end. Example::

    async with db.SessionLocal() as session:
        report = await purge_expired(session=session, settings=get_settings())
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core.clock import utcnow
from dashtam.core.config import Settings
from dashtam.models import (
    AuthorizationState,
    AuthRefreshToken,
    AuthSession,
    LoginThrottle,
    SandboxAccessToken,
    SandboxAuthorizationCode,
    SandboxRefreshToken,
)

#: The models whose rows carry an ``expires_at`` and serve nothing after it.
_Expiring = (
    SandboxAuthorizationCode
    | SandboxAccessToken
    | SandboxRefreshToken
    | AuthorizationState
    | AuthRefreshToken
)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    sandbox_codes: int
    sandbox_access_tokens: int
    sandbox_refresh_tokens: int
    authorization_states: int
    refresh_tokens: int
    sessions: int
    throttles: int


def _longest_throttle_window(settings: Settings) -> timedelta:
    return timedelta(
        seconds=max(
            settings.login_failure_window_seconds,
            settings.register_window_seconds,
            settings.auth_refresh_window_seconds,
            settings.sandbox_authorize_window_seconds,
        )
    )


async def _deleted(session: AsyncSession, statement: Delete) -> int:
    result = cast("CursorResult[Any]", await session.execute(statement))
    return result.rowcount


async def _delete_expired(session: AsyncSession, model: type[_Expiring], now: datetime) -> int:
    return await _deleted(session, delete(model).where(model.expires_at < now))


async def purge_expired(
    *, session: AsyncSession, settings: Settings, now: datetime | None = None
) -> PurgeReport:
    """Delete expired grants, states, login tokens, empty sessions and stale throttle rows."""
    now = now or utcnow()
    sandbox_codes = await _delete_expired(session, SandboxAuthorizationCode, now)
    sandbox_access_tokens = await _delete_expired(session, SandboxAccessToken, now)
    sandbox_refresh_tokens = await _delete_expired(session, SandboxRefreshToken, now)
    authorization_states = await _delete_expired(session, AuthorizationState, now)
    refresh_tokens = await _delete_expired(session, AuthRefreshToken, now)
    # A session without refresh tokens can never be used again (its access tokens, at most
    # minutes old, go with it).
    sessions = await _deleted(
        session,
        delete(AuthSession).where(
            ~exists(select(AuthRefreshToken.id).where(AuthRefreshToken.family_id == AuthSession.id))
        ),
    )
    throttles = await _deleted(
        session,
        delete(LoginThrottle).where(
            LoginThrottle.window_started_at < now - _longest_throttle_window(settings),
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
        ),
    )
    await session.commit()
    return PurgeReport(
        sandbox_codes=sandbox_codes,
        sandbox_access_tokens=sandbox_access_tokens,
        sandbox_refresh_tokens=sandbox_refresh_tokens,
        authorization_states=authorization_states,
        refresh_tokens=refresh_tokens,
        sessions=sessions,
        throttles=throttles,
    )
