"""Refreshing provider tokens before they expire, without a request asking for it.

``queue_due_refreshes`` (periodic) defers one refresh job per provider whose access token
expires within ``DASHTAM_REFRESH_MARGIN_SECONDS`` and whose backoff has elapsed; the job
calls ``refresh_provider``, the same refresh a user's ``POST /token-refreshes`` runs (row
lock, rotation, backoff, audit).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core import db
from dashtam.core.clock import utcnow
from dashtam.core.config import Settings
from dashtam.core.errors import ProblemError
from dashtam.models import ConnectionStatus, Provider, ProviderConnection, ProviderToken, User
from dashtam.services import authorization
from dashtam.services.context import HttpClientFactory, RequestContext
from dashtam.services.job_queue import TaskName, enqueue_for_provider

_log = logging.getLogger("dashtam.refresh")
REFRESH_USER_AGENT = "dashtam-refresh"


async def queue_due_refreshes(*, session: AsyncSession, settings: Settings) -> int:
    now = utcnow()
    due = await session.scalars(
        select(ProviderConnection.provider_id)
        .join(ProviderToken, ProviderToken.connection_id == ProviderConnection.id)
        .where(
            ProviderConnection.status == ConnectionStatus.ACTIVE,
            ProviderToken.refresh_token_encrypted.is_not(None),
            ProviderToken.expires_at <= now + timedelta(seconds=settings.refresh_margin_seconds),
            or_(
                ProviderConnection.next_retry_at.is_(None), ProviderConnection.next_retry_at <= now
            ),
        )
    )
    queued = 0
    for provider_id in list(due):
        if await enqueue_for_provider(
            session=session, task=TaskName.REFRESH_PROVIDER, provider_id=provider_id
        ):
            queued += 1
    await session.commit()
    return queued


async def refresh_provider(
    *, provider_id: uuid.UUID, settings: Settings, http: HttpClientFactory, base_url: str
) -> bool:
    """Refresh the provider's tokens; False when it could not be (audited by the refresh)."""
    session = db.SessionLocal()
    try:
        user = await session.scalar(
            select(User)
            .join(Provider, Provider.user_id == User.id)
            .where(Provider.id == provider_id)
        )
        if user is None:  # deleted since the job was queued
            return False
        await authorization.refresh_tokens(
            session=session,
            user=user,
            provider_id=provider_id,
            settings=settings,
            http=http,
            context=RequestContext(
                ip_address=None, user_agent=REFRESH_USER_AGENT, base_url=base_url
            ),
        )
    except ProblemError as exc:
        _log.warning("provider %s was not refreshed: %s", provider_id, exc.detail)
        return False
    finally:
        await db.close_quietly(session)
    return True
