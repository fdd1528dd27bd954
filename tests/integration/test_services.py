"""Services against the real database, called directly (they commit for real)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from dashtam.core.errors import ConflictError, NotFoundError, UnauthorizedError
from dashtam.models import ConnectionStatus
from dashtam.schemas.auth import UserLogin, UserRegister
from dashtam.schemas.providers import ProviderCreate
from dashtam.services import auth, providers
from dashtam.services.context import RequestContext


async def _user(session: AsyncSession, email: str) -> auth.User:
    return await auth.register_user(
        session=session,
        data=UserRegister(email=email, password="a good password"),
        settings=get_settings(),
    )


async def test_created_provider_is_usable_after_commit(async_db: AsyncSession) -> None:
    user = await _user(async_db, "svc@example.com")
    provider = await providers.create_provider(
        session=async_db, user=user, data=ProviderCreate(provider_key="sandbox", alias="S")
    )
    # Loaded before returning: no implicit IO after the service's commit.
    assert provider.connection.status is ConnectionStatus.NOT_CONNECTED
    assert provider.created_at is not None
    assert provider.updated_at is not None


async def test_another_users_provider_does_not_exist(async_db: AsyncSession) -> None:
    owner = await _user(async_db, "owner@example.com")
    stranger = await _user(async_db, "stranger@example.com")
    provider = await providers.create_provider(
        session=async_db, user=owner, data=ProviderCreate(provider_key="sandbox", alias="S")
    )
    with pytest.raises(NotFoundError):
        await providers.get_provider(session=async_db, user=stranger, provider_id=provider.id)
    with pytest.raises(NotFoundError):
        await providers.get_provider(session=async_db, user=owner, provider_id=uuid.uuid4())


async def test_refresh_token_reuse_revokes_the_family(async_db: AsyncSession) -> None:
    settings = get_settings()
    context = RequestContext(ip_address="192.0.2.1", user_agent="tests", base_url="")
    await _user(async_db, "rot@example.com")
    pair = await auth.login(
        session=async_db,
        data=UserLogin(email="rot@example.com", password="a good password"),
        settings=settings,
        context=context,
    )
    rotated = await auth.refresh_login(
        session=async_db, refresh_token=pair.refresh_token, settings=settings, context=context
    )
    # Presented again at once: a retried request, refused without ending the session.
    with pytest.raises(ConflictError, match="already exchanged"):
        await auth.refresh_login(
            session=async_db, refresh_token=pair.refresh_token, settings=settings, context=context
        )
    # Presented again later: a stolen token; the whole session ends.
    with shifted(timedelta(seconds=settings.auth_refresh_retry_seconds + 1)):
        with pytest.raises(UnauthorizedError, match="already used"):
            await auth.refresh_login(
                session=async_db,
                refresh_token=pair.refresh_token,
                settings=settings,
                context=context,
            )
        with pytest.raises(UnauthorizedError, match="revoked"):
            await auth.refresh_login(
                session=async_db,
                refresh_token=rotated.refresh_token,
                settings=settings,
                context=context,
            )
