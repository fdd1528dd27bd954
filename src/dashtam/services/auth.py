"""Accounts: registration, login, rotating refresh tokens with reuse detection."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core import security
from dashtam.core.clock import utcnow
from dashtam.core.config import Settings
from dashtam.core.errors import ConflictError, UnauthorizedError
from dashtam.models import AuthRefreshToken, User
from dashtam.schemas.auth import TokenPair, UserLogin, UserRegister
from dashtam.services import login_throttle


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def register_user(
    *,
    session: AsyncSession,
    data: UserRegister,
    settings: Settings,
    client_address: str | None = None,
) -> User:
    """A new account; at most ``DASHTAM_REGISTER_MAX_PER_ADDRESS`` per address and window."""
    await login_throttle.enforce_rate_limit(
        session=session,
        scope=login_throttle.Scope.REGISTER,
        subject=client_address,
        limit=settings.register_max_per_address,
        window_seconds=settings.register_window_seconds,
        now=utcnow(),
    )
    email = normalize_email(str(data.email))
    if await session.scalar(select(User.id).where(User.email == email)) is not None:
        raise ConflictError("An account with this email already exists.")
    password_hash = await security.hash_password(data.password)
    user = User(email=email, name=data.name, password_hash=password_hash)
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:  # registered concurrently
        await session.rollback()
        raise ConflictError("An account with this email already exists.") from None
    await session.refresh(user)
    return user


async def login(
    *,
    session: AsyncSession,
    data: UserLogin,
    settings: Settings,
    client_address: str | None = None,
) -> TokenPair:
    """Tokens for a correct email and password; throttled per account and per address."""
    email = normalize_email(data.email)
    now = utcnow()
    await login_throttle.count_login_attempt(
        session=session, email=email, address=client_address, settings=settings, now=now
    )
    user = await session.scalar(select(User).where(User.email == email))
    if not await security.verify_password(data.password, user.password_hash if user else None):
        raise UnauthorizedError("Email or password is incorrect.")
    assert user is not None
    await login_throttle.take_back_login_attempt(
        session=session, email=email, address=client_address, settings=settings
    )
    if security.password_needs_rehash(user.password_hash):
        user.password_hash = await security.hash_password(data.password)
    return await _issue_pair(
        session=session, user_id=user.id, family_id=uuid.uuid4(), settings=settings
    )


async def refresh_login(
    *,
    session: AsyncSession,
    refresh_token: str,
    settings: Settings,
    client_address: str | None = None,
) -> TokenPair:
    """Swap a refresh token for a new pair; presenting a spent one revokes its whole family."""
    now = utcnow()
    await login_throttle.enforce_rate_limit(
        session=session,
        scope=login_throttle.Scope.AUTH_REFRESH,
        subject=client_address,
        limit=settings.auth_refresh_max_per_address,
        window_seconds=settings.auth_refresh_window_seconds,
        now=now,
    )
    stored = await session.scalar(
        select(AuthRefreshToken)
        .where(AuthRefreshToken.token_hash == security.hash_opaque_token(refresh_token))
        .with_for_update()
    )
    if stored is None:
        raise UnauthorizedError("Refresh token is invalid.")
    if stored.used_at is not None or stored.revoked_at is not None:
        await session.execute(
            update(AuthRefreshToken)
            .where(
                AuthRefreshToken.family_id == stored.family_id,
                AuthRefreshToken.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        await session.commit()
        raise UnauthorizedError("Refresh token was already used; its session has been revoked.")
    if stored.expires_at <= now:
        raise UnauthorizedError("Refresh token has expired.")
    stored.used_at = now
    return await _issue_pair(
        session=session, user_id=stored.user_id, family_id=stored.family_id, settings=settings
    )


async def _issue_pair(
    *, session: AsyncSession, user_id: uuid.UUID, family_id: uuid.UUID, settings: Settings
) -> TokenPair:
    refresh_token = security.new_opaque_token()
    session.add(
        AuthRefreshToken(
            user_id=user_id,
            family_id=family_id,
            token_hash=security.hash_opaque_token(refresh_token),
            expires_at=utcnow() + timedelta(days=settings.refresh_token_days),
        )
    )
    await session.commit()
    access = security.create_access_token(
        user_id=user_id,
        secret=settings.signing_key,
        lifetime=timedelta(minutes=settings.access_token_minutes),
    )
    return TokenPair(
        access_token=access.token,
        refresh_token=refresh_token,
        token_type="bearer",
        expires_in=access.expires_in,
    )


async def authenticate(*, session: AsyncSession, access_token: str, settings: Settings) -> User:
    """The user an access token belongs to (401 when the token or the user is gone)."""
    try:
        user_id = security.decode_access_token(access_token, secret=settings.signing_key)
    except security.InvalidTokenError as exc:
        raise UnauthorizedError(f"Access token is invalid: {exc}.") from None
    user = await session.get(User, user_id)
    if user is None:
        raise UnauthorizedError("Access token refers to no user.")
    return user
