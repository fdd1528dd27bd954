"""Accounts: registration, login sessions, rotating refresh tokens with reuse detection.

A login opens a session (``auth_sessions``): its refresh tokens rotate as one family and its
access tokens carry its id, so ending the session (logout, revocation, a password change,
a reused refresh token) refuses them all at once.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from dashtam.core import security
from dashtam.core.clock import utcnow
from dashtam.core.config import Settings
from dashtam.core.errors import ConflictError, ForbiddenError, NotFoundError, UnauthorizedError
from dashtam.models import AuthRefreshToken, AuthSession, User
from dashtam.schemas.auth import (
    PasswordChange,
    SessionPublic,
    SessionsPublic,
    TokenPair,
    UserLogin,
    UserRegister,
)
from dashtam.services import login_throttle
from dashtam.services.audit import AuditAction, record_separately
from dashtam.services.callers import Authenticated, access_claims, caller_of
from dashtam.services.context import RequestContext
from dashtam.services.reads import Reader, for_caller


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _email_digest(email: str) -> str:
    # Failed logins name no account in clear in the audit log (the email may be mistyped).
    return hashlib.sha256(email.encode()).hexdigest()


async def register_user(
    *,
    session: AsyncSession,
    data: UserRegister,
    settings: Settings,
    context: RequestContext | None = None,
) -> User:
    """A new account; at most ``DASHTAM_REGISTER_MAX_PER_ADDRESS`` per address and window."""
    await login_throttle.enforce_rate_limit(
        session=session,
        scope=login_throttle.Scope.REGISTER,
        subject=context.ip_address if context else None,
        limit=settings.register_max_per_address,
        window_seconds=settings.register_window_seconds,
        now=utcnow(),
    )
    email = normalize_email(str(data.email))
    if await session.scalar(select(User.id).where(User.email == email)) is not None:
        raise ConflictError("An account with this email already exists.")
    # Hand the connection back while the hash waits for its thread: a burst of registrations
    # must not hold the pool.
    await session.commit()
    password_hash = await security.hash_password(data.password)
    user = User(email=email, name=data.name, password_hash=password_hash)
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:  # registered concurrently
        await session.rollback()
        raise ConflictError("An account with this email already exists.") from None
    await session.refresh(user)
    await session.commit()  # ends the read transaction of the refresh
    if context is not None:
        await record_separately(
            provider_id=None, user_id=user.id, action=AuditAction.REGISTER, context=context
        )
    return user


async def login(
    *,
    session: AsyncSession,
    data: UserLogin,
    settings: Settings,
    context: RequestContext,
) -> TokenPair:
    """Tokens for a correct email and password; throttled per account and per address."""
    email = normalize_email(data.email)
    now = utcnow()
    await login_throttle.count_login_attempt(
        session=session, email=email, address=context.ip_address, settings=settings, now=now
    )
    user = await session.scalar(select(User).where(User.email == email))
    # Only read: end the transaction (objects stay loaded) so that no pooled connection waits
    # on the password hash, nor nests the audit row below in it.
    await session.commit()
    if not await security.verify_password(data.password, user.password_hash if user else None):
        user_id = user.id if user else None
        await record_separately(
            provider_id=None,
            user_id=user_id,
            action=AuditAction.LOGIN_FAILED,
            context=context,
            email_sha256=_email_digest(email),
        )
        raise UnauthorizedError("Email or password is incorrect.")
    assert user is not None
    await login_throttle.take_back_login_attempt(
        session=session, email=email, address=context.ip_address, settings=settings
    )
    if security.password_needs_rehash(user.password_hash):
        user.password_hash = await security.hash_password(data.password)
    login_session = AuthSession(
        id=uuid.uuid4(),
        user_id=user.id,
        last_used_at=now,
        ip_address=(context.ip_address or None) and context.ip_address[:64],
        user_agent=(context.user_agent or None) and context.user_agent[:500],
    )
    session.add(login_session)
    await session.flush()  # no relationship orders it before its refresh token's row
    pair = await _issue_pair(
        session=session, user_id=user.id, session_id=login_session.id, settings=settings
    )
    await record_separately(
        provider_id=None,
        user_id=user.id,
        action=AuditAction.LOGIN,
        context=context,
        session_id=str(login_session.id),
    )
    return pair


async def refresh_login(
    *,
    session: AsyncSession,
    refresh_token: str,
    settings: Settings,
    context: RequestContext,
) -> TokenPair:
    """Swap a refresh token for a new pair; presenting a spent one revokes its whole session.

    A token presented again within ``DASHTAM_AUTH_REFRESH_RETRY_SECONDS`` of its use is a
    retried request (a flaky network resending it), not a theft: 409, and the session lives.
    """
    now = utcnow()
    await login_throttle.enforce_rate_limit(
        session=session,
        scope=login_throttle.Scope.AUTH_REFRESH,
        subject=context.ip_address,
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
    if stored.revoked_at is not None and stored.used_at is None:
        raise UnauthorizedError("Refresh token was revoked: its session has ended.")
    if stored.used_at is not None:
        since_use = now - stored.used_at
        if stored.revoked_at is None and since_use <= timedelta(
            seconds=settings.auth_refresh_retry_seconds
        ):
            raise ConflictError(
                f"This refresh token was already exchanged {since_use.total_seconds():.0f} s "
                "ago; use the tokens that request returned (the session stays valid)."
            )
        user_id, family_id = stored.user_id, stored.family_id
        await _end_sessions(session=session, session_ids=[family_id], now=now)
        await session.commit()
        await record_separately(
            provider_id=None,
            user_id=user_id,
            action=AuditAction.REFRESH_TOKEN_REUSE,
            context=context,
            session_id=str(family_id),
        )
        raise UnauthorizedError("Refresh token was already used; its session has been revoked.")
    if stored.expires_at <= now:
        raise UnauthorizedError("Refresh token has expired.")
    stored.used_at = now
    await session.execute(
        update(AuthSession).where(AuthSession.id == stored.family_id).values(last_used_at=now)
    )
    return await _issue_pair(
        session=session, user_id=stored.user_id, session_id=stored.family_id, settings=settings
    )


async def _issue_pair(
    *, session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID, settings: Settings
) -> TokenPair:
    refresh_token = security.new_opaque_token()
    session.add(
        AuthRefreshToken(
            user_id=user_id,
            family_id=session_id,
            token_hash=security.hash_opaque_token(refresh_token),
            expires_at=utcnow() + timedelta(days=settings.refresh_token_days),
        )
    )
    await session.commit()
    access = security.create_access_token(
        user_id=user_id,
        session_id=session_id,
        secret=settings.signing_key,
        lifetime=timedelta(minutes=settings.access_token_minutes),
    )
    return TokenPair(
        access_token=access.token,
        refresh_token=refresh_token,
        token_type="bearer",
        expires_in=access.expires_in,
    )


async def _end_sessions(
    *, session: AsyncSession, session_ids: list[uuid.UUID], now: datetime
) -> None:
    """Revoke the sessions and their refresh tokens (the caller commits)."""
    if not session_ids:
        return
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id.in_(session_ids), AuthSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.execute(
        update(AuthRefreshToken)
        .where(AuthRefreshToken.family_id.in_(session_ids), AuthRefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def authenticate(
    *, connection: AsyncConnection, access_token: str, settings: Settings
) -> Authenticated:
    """Who an access token belongs to (401 when it, its session or its user is gone)."""
    return await caller_of(connection, access_claims(access_token, settings))


async def list_sessions(*, reader: Reader) -> SessionsPublic:
    """The caller's open sessions, most recently used first; the caller's own one marked."""
    rows = await reader.rows(_OPEN_SESSIONS)
    return SessionsPublic(
        items=[
            SessionPublic(
                id=row.id,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                client=row.user_agent,
                ip_address=row.ip_address,
                current=row.id == reader.claims.session_id,
            )
            for row in rows
        ]
    )


_OPEN_SESSIONS = for_caller(
    select(
        AuthSession.id,
        AuthSession.created_at,
        AuthSession.last_used_at,
        AuthSession.user_agent,
        AuthSession.ip_address,
    )
    .where(AuthSession.user_id == bindparam("user_id"), AuthSession.revoked_at.is_(None))
    .order_by(AuthSession.last_used_at.desc(), AuthSession.id)
)


async def end_session(
    *,
    session: AsyncSession,
    caller: Authenticated,
    session_id: uuid.UUID,
    context: RequestContext,
) -> None:
    """End one of the caller's sessions (404 for anyone else's, or one already ended)."""
    user_id = caller.user.id
    found = await session.scalar(
        select(AuthSession.id).where(
            AuthSession.id == session_id,
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
        )
    )
    if found is None:
        raise NotFoundError(f"Session {session_id} was not found.")
    await _end_sessions(session=session, session_ids=[session_id], now=utcnow())
    await session.commit()
    action = AuditAction.LOGOUT if session_id == caller.session_id else AuditAction.SESSION_REVOKED
    await record_separately(
        provider_id=None,
        user_id=user_id,
        action=action,
        context=context,
        session_id=str(session_id),
    )


async def change_password(
    *,
    session: AsyncSession,
    caller: Authenticated,
    data: PasswordChange,
    settings: Settings,
    context: RequestContext,
) -> None:
    """Set a new password and end every other session of the user.

    The current password is checked like a login (and throttled with it), so a stolen access
    token alone cannot take the account over.
    """
    user = caller.user
    user_id, email, current_hash = user.id, user.email, user.password_hash
    now = utcnow()
    await login_throttle.count_login_attempt(
        session=session, email=email, address=context.ip_address, settings=settings, now=now
    )
    if not await security.verify_password(data.current_password, current_hash):
        await record_separately(
            provider_id=None,
            user_id=user_id,
            action=AuditAction.PASSWORD_CHANGE,
            context=context,
            outcome="failure",
        )
        raise ForbiddenError("The current password is incorrect.")
    await login_throttle.take_back_login_attempt(
        session=session, email=email, address=context.ip_address, settings=settings
    )
    new_hash = await security.hash_password(data.new_password)
    await session.execute(update(User).where(User.id == user_id).values(password_hash=new_hash))
    others = list(
        await session.scalars(
            select(AuthSession.id).where(
                AuthSession.user_id == user_id,
                AuthSession.id != caller.session_id,
                AuthSession.revoked_at.is_(None),
            )
        )
    )
    await _end_sessions(session=session, session_ids=others, now=now)
    await session.commit()
    await record_separately(
        provider_id=None,
        user_id=user_id,
        action=AuditAction.PASSWORD_CHANGE,
        context=context,
        outcome="success",
        sessions_ended=len(others),
    )
