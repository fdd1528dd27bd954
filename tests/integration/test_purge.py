"""``purge_expired`` deletes what has expired and keeps what is still in use."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core.clock import shifted, utcnow
from dashtam.core.config import get_settings
from dashtam.models import (
    AuthRefreshToken,
    AuthSession,
    LoginThrottle,
    SandboxAccessToken,
    SandboxAuthorizationCode,
    SandboxRefreshToken,
)
from dashtam.schemas.auth import UserLogin, UserRegister
from dashtam.services import auth
from dashtam.services.context import RequestContext
from dashtam.services.purge import purge_expired

CONTEXT = RequestContext(ip_address="192.0.2.7", user_agent="tests", base_url="")


async def _count(session: AsyncSession, model: type) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_purge_deletes_only_what_expired(async_db: AsyncSession) -> None:
    settings = get_settings()
    await auth.register_user(
        session=async_db,
        data=UserRegister(email="purge@example.com", password="a good password"),
        settings=settings,
        context=CONTEXT,
    )
    login = UserLogin(email="purge@example.com", password="a good password")
    await auth.login(session=async_db, data=login, settings=settings, context=CONTEXT)
    now = utcnow()
    async_db.add_all(
        [
            SandboxAuthorizationCode(
                code_hash="a" * 64, client_id="c", redirect_uri="u", expires_at=now
            ),
            SandboxAccessToken(token_hash="c" * 64, family_id=uuid.uuid4(), expires_at=now),
            SandboxRefreshToken(
                token_hash="b" * 64,
                client_id="c",
                family_id=uuid.uuid4(),
                expires_at=now + timedelta(days=30),
            ),
        ]
    )
    await async_db.commit()

    nothing_yet = await purge_expired(session=async_db, settings=settings, now=now)
    assert nothing_yet.refresh_tokens == 0
    assert nothing_yet.sessions == 0
    assert await _count(async_db, AuthSession) == 1

    later = now + timedelta(days=settings.refresh_token_days, seconds=1)
    with shifted(later - now):
        report = await purge_expired(session=async_db, settings=settings)

    assert report.sandbox_codes == 1
    assert report.sandbox_access_tokens == 1
    assert report.sandbox_refresh_tokens == 0  # still valid for 30 days
    assert (report.refresh_tokens, report.sessions) == (1, 1)
    assert report.throttles >= 1  # the registration's counter, its window long over
    assert await _count(async_db, AuthRefreshToken) == 0
    assert await _count(async_db, SandboxRefreshToken) == 1
    assert await _count(async_db, LoginThrottle) == 0
