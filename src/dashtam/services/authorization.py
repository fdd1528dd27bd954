"""Connecting a provider over OAuth 2.0, keeping its tokens fresh, and disconnecting it.

Tokens are sealed with the keyring before they reach the database; the ``state`` handed to
the browser is signed, expires, and is consumed once (the callback authenticates by it).
The code exchange calls the provider outside any open transaction and then locks the
connection row before storing, as disconnect does, so a disconnect meanwhile is not undone; a
refresh keeps its connection's row locked across the provider call, so refreshes of one
connection serialize.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core import db, security
from dashtam.core.clock import utcnow
from dashtam.core.config import Settings
from dashtam.core.crypto import DecryptionError, Sealed
from dashtam.core.errors import (
    BadGatewayError,
    BadRequestError,
    ConflictError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from dashtam.models import (
    AuthorizationState,
    ConnectionStatus,
    Provider,
    ProviderConnection,
    ProviderToken,
    User,
)
from dashtam.providers import (
    OAuth2Client,
    OAuth2Endpoints,
    ProviderError,
    TokenGrant,
    authorization_url,
)
from dashtam.providers import get_provider_type as _provider_type
from dashtam.schemas.authorization import AuthorizationStart, ConnectionStatusPublic
from dashtam.services.audit import AuditAction, record, record_separately
from dashtam.services.context import HttpClientFactory, RequestContext, UserRef, keyring_for
from dashtam.services.providers import (
    OWNED_PROVIDER,
    get_provider,
    lock_connection,
    provider_not_found,
)
from dashtam.services.reads import Reader, for_caller
from dashtam.services.token_vault import open_refresh_token, store_grant

STATE_AUDIENCE = "dashtam:authorization-state"
REFRESH_MARGIN = timedelta(minutes=5)
FAILURES_BEFORE_ERROR = 3
MAX_BACKOFF = timedelta(hours=24)
TRANSIENT_RETRY_AFTER_SECONDS = 5
_TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Waits before each new attempt to store a refreshed grant whose connection was lost: about
# 12 s in all, longer than a database restart or failover usually takes.
STORE_RETRY_DELAYS = (0.1, 0.3, 0.6, 1.0, 2.0, 3.0, 5.0)
_log = logging.getLogger("dashtam.authorization")


def callback_uri(base_url: str, provider_id: uuid.UUID) -> str:
    return f"{base_url.rstrip('/')}/api/v1/providers/{provider_id}/authorization/callback"


def is_callback_uri(uri: str, base_url: str) -> bool:
    """True when ``uri`` is this Dashtam's callback for some provider (as ``callback_uri``)."""
    prefix = f"{base_url.rstrip('/')}/api/v1/providers/"
    provider_id, _, rest = uri.removeprefix(prefix).partition("/")
    if not uri.startswith(prefix) or rest != "authorization/callback":
        return False
    try:
        return callback_uri(base_url, uuid.UUID(provider_id)) == uri
    except ValueError:
        return False


def backoff_after(failures: int) -> timedelta:
    """Wait before the next refresh attempt after ``failures`` consecutive failures."""
    if failures >= 12:  # 2**11 minutes already exceeds the cap; avoid huge powers
        return MAX_BACKOFF
    return min(timedelta(minutes=2**failures), MAX_BACKOFF)


def _endpoints(provider: Provider, settings: Settings, base_url: str) -> OAuth2Endpoints:
    provider_type = _provider_type(provider.provider_key)
    endpoints = provider_type.endpoints(settings, base_url) if provider_type else None
    if provider_type is None or endpoints is None:
        needed = (
            ", ".join(provider_type.missing_settings) if provider_type else "a known provider type"
        )
        raise ConflictError(
            f"Provider type {provider.provider_key!r} is not configured here: set {needed}."
        )
    return endpoints


def status_of(
    connection: ProviderConnection, token: ProviderToken | None
) -> ConnectionStatusPublic:
    return _status(connection, token.expires_at if token is not None else None)


def _status(
    connection: ProviderConnection | Row[*tuple[Any, ...]], expires_at: datetime | None
) -> ConnectionStatusPublic:
    needs_refresh = expires_at is not None and expires_at <= utcnow() + REFRESH_MARGIN
    return ConnectionStatusPublic(
        provider_id=connection.provider_id,
        status=connection.status,
        expires_at=expires_at,
        needs_refresh=needs_refresh,
        connected_at=connection.connected_at,
        last_refreshed_at=connection.last_refreshed_at,
        refresh_count=connection.refresh_count,
        consecutive_failures=connection.consecutive_failures,
        next_retry_at=connection.next_retry_at,
        last_error=connection.last_error,
    )


async def start_authorization(
    *,
    session: AsyncSession,
    user: UserRef,
    provider_id: uuid.UUID,
    settings: Settings,
    context: RequestContext,
) -> AuthorizationStart:
    provider = await get_provider(session=session, user=user, provider_id=provider_id)
    endpoints = _endpoints(provider, settings, context.base_url)
    keyring = keyring_for(settings)
    now = utcnow()
    expires_at = now + timedelta(seconds=settings.authorization_state_seconds)
    redirect_uri = callback_uri(context.base_url, provider.id)

    pending = AuthorizationState(
        id=uuid.uuid4(),
        user_id=user.id,
        provider_id=provider.id,
        redirect_uri=redirect_uri,
        expires_at=expires_at,
    )
    code_challenge = None
    if endpoints.supports_pkce:
        verifier, code_challenge = security.pkce_pair()
        sealed = keyring.encrypt_text(verifier, aad=f"authorization-state:{pending.id}")
        pending.key_id, pending.code_verifier_encrypted = sealed.key_id, sealed.ciphertext
    session.add(pending)
    if provider.connection.status is not ConnectionStatus.ACTIVE:
        provider.connection.status = ConnectionStatus.PENDING
    record(
        session=session,
        provider_id=provider.id,
        user_id=user.id,
        action=AuditAction.CONNECT,
        context=context,
        outcome="started",
        pkce=endpoints.supports_pkce,
    )
    await session.commit()

    state = security.sign_value(
        {"sid": str(pending.id), "uid": str(user.id), "pid": str(provider.id)},
        secret=settings.signing_key,
        audience=STATE_AUDIENCE,
        expires_at=expires_at,
    )
    url = authorization_url(
        endpoints, redirect_uri=redirect_uri, state=state, code_challenge=code_challenge
    )
    return AuthorizationStart(authorization_url=url, state=state)


async def complete_authorization(
    *,
    session: AsyncSession,
    provider_id: uuid.UUID,
    code: str | None,
    state: str,
    error: str | None,
    settings: Settings,
    http: HttpClientFactory,
    context: RequestContext,
) -> ConnectionStatusPublic:
    """The callback: authenticated by the signed single-use ``state``, not by a bearer token."""
    try:
        claims = security.unsign_value(state, secret=settings.signing_key, audience=STATE_AUDIENCE)
        state_id = uuid.UUID(str(claims["sid"]))
        user_id = uuid.UUID(str(claims["uid"]))
        state_provider_id = uuid.UUID(str(claims["pid"]))
    except (security.InvalidTokenError, KeyError, ValueError):
        raise BadRequestError("The authorization state is invalid or has expired.") from None
    if state_provider_id != provider_id:
        raise BadRequestError("The authorization state belongs to another provider.")

    user = await session.get(User, user_id)
    if user is None:
        raise BadRequestError("The authorization state is invalid or has expired.")
    # The connection row first, as refresh and disconnect take it: a disconnect waits for this
    # transaction (and then finds the state spent), never the other way round.
    await lock_connection(session=session, user=user, provider_id=provider_id)
    now = utcnow()
    consumed = await session.scalar(
        update(AuthorizationState)
        .where(
            AuthorizationState.id == state_id,
            AuthorizationState.user_id == user_id,
            AuthorizationState.provider_id == provider_id,
            AuthorizationState.consumed_at.is_(None),
        )
        .values(consumed_at=now)
        .returning(AuthorizationState)
    )
    if consumed is None:
        await session.rollback()
        raise ConflictError("The authorization state was already used; start a new authorization.")
    provider = await get_provider(
        session=session, user=user, provider_id=provider_id, with_token=True
    )

    def record_failure(**details: str) -> None:
        record(
            session=session,
            provider_id=provider_id,
            user_id=user_id,
            action=AuditAction.CALLBACK,
            context=context,
            outcome="failure",
            **details,
        )

    def fail(connection: ProviderConnection, reason: str, **details: str) -> None:
        if connection.token is None:  # a failed re-authorization keeps working tokens
            connection.status = ConnectionStatus.ERROR
        connection.last_error = reason[:500]
        record_failure(**details)

    if error is not None or not code:
        fail(
            provider.connection,
            "authorization was not granted",
            error=(error or "missing_code")[:100],
        )
        await session.commit()
        raise BadRequestError(
            f"The provider did not grant access ({(error or 'no code')[:100]}).",
            title="Authorization Failed",
        )

    keyring = keyring_for(settings)
    verifier = None
    if consumed.code_verifier_encrypted is not None and consumed.key_id is not None:
        verifier = keyring.decrypt_text(
            Sealed(consumed.key_id, consumed.code_verifier_encrypted),
            aad=f"authorization-state:{consumed.id}",
        )
    endpoints = _endpoints(provider, settings, context.base_url)
    provider_key, redirect_uri = provider.provider_key, consumed.redirect_uri
    # The state is spent whatever the provider answers; no lock is held during its call.
    await session.commit()

    try:
        async with http(provider_key) as client:
            grant = await OAuth2Client(endpoints, client).exchange_code(
                code=code, redirect_uri=redirect_uri, code_verifier=verifier
            )
    except ProviderError as exc:
        fail(
            await _locked_connection(session=session, user=user, provider_id=provider_id),
            f"code exchange failed: {exc.error}",
            error=exc.error,
        )
        await session.commit()
        raise BadGatewayError(
            f"The provider refused the authorization code ({exc.error}).", provider_error=exc.error
        ) from None

    # What happened meanwhile counts: a disconnect, or another callback that stored tokens.
    connection = await _locked_connection(session=session, user=user, provider_id=provider_id)
    if connection.status is ConnectionStatus.REVOKED:
        record_failure(error="disconnected_during_authorization")
        await session.commit()
        await _revoke_at_provider(
            http=http,
            provider_key=provider_key,
            endpoints=endpoints,
            refresh_token=grant.refresh_token,
        )
        raise ConflictError(
            "The provider was disconnected while this authorization completed; its tokens were "
            "discarded. Start a new authorization to connect it again."
        )
    store_grant(connection, grant, keyring=keyring, now=now, keep_refresh=None)
    connection.status = ConnectionStatus.ACTIVE
    connection.connected_at = now
    connection.consecutive_failures = 0
    connection.next_retry_at = None
    connection.last_error = None
    await session.commit()
    await record_separately(
        provider_id=provider_id,
        user_id=user_id,
        action=AuditAction.CALLBACK,
        context=context,
        outcome="success",
        expires_in=grant.expires_in,
        scope=grant.scope,
    )
    return status_of(connection, connection.token)


async def _locked_connection(
    *, session: AsyncSession, user: UserRef, provider_id: uuid.UUID
) -> ProviderConnection:
    """The provider's connection (with its token), locked and read afresh."""
    await lock_connection(session=session, user=user, provider_id=provider_id)
    provider = await get_provider(
        session=session, user=user, provider_id=provider_id, with_token=True
    )
    return provider.connection


async def get_status(*, reader: Reader, provider_id: uuid.UUID) -> ConnectionStatusPublic:
    """The caller's provider's connection and its token's expiry, in one statement; else 404."""
    row = await reader.first(_STATUS, {"provider_id": provider_id})
    if row is None:
        raise provider_not_found(provider_id)
    return _status(row, row.expires_at)


_STATUS = for_caller(
    select(
        ProviderConnection.provider_id,
        ProviderConnection.status,
        ProviderConnection.connected_at,
        ProviderConnection.last_refreshed_at,
        ProviderConnection.refresh_count,
        ProviderConnection.consecutive_failures,
        ProviderConnection.next_retry_at,
        ProviderConnection.last_error,
        ProviderToken.expires_at,
    )
    .outerjoin(ProviderToken, ProviderToken.connection_id == ProviderConnection.id)
    .where(ProviderConnection.provider_id.in_(OWNED_PROVIDER))
)


async def refresh_tokens(
    *,
    session: AsyncSession,
    user: UserRef,
    provider_id: uuid.UUID,
    settings: Settings,
    http: HttpClientFactory,
    context: RequestContext,
) -> ConnectionStatusPublic:
    """Refresh the provider's access token now; failures back off exponentially (cap 24 h).

    The connection's row stays locked (``SELECT … FOR UPDATE``) from reading the refresh token
    until the new tokens and the counters are committed: concurrent refreshes of one
    connection run one after another, each presenting the refresh token the previous one
    stored, so no rotation is lost. The audit row follows in a transaction of its own, and a
    lost connection while storing is retried (``_store_refreshed_grant``). The provider call
    is made meanwhile; the in-process sandbox takes only its own rows' locks, on another
    connection, so the lock order is always connection row first. Waiters give up after
    ``DASHTAM_DB_LOCK_TIMEOUT`` (503).

    The connection taken so far (to authenticate) is handed back first, and at most
    ``nested_connection_slots()`` refreshes per worker hold one meanwhile, so the sandbox
    always finds a free pooled connection.
    """
    await session.commit()  # end the request's read transaction: its connection goes back
    async with db.nested_connection_slots():
        return await _refresh_locked(
            session=session,
            user=user,
            provider_id=provider_id,
            settings=settings,
            http=http,
            context=context,
        )


async def _refresh_locked(
    *,
    session: AsyncSession,
    user: UserRef,
    provider_id: uuid.UUID,
    settings: Settings,
    http: HttpClientFactory,
    context: RequestContext,
) -> ConnectionStatusPublic:
    await lock_connection(session=session, user=user, provider_id=provider_id)
    provider = await get_provider(
        session=session, user=user, provider_id=provider_id, with_token=True
    )
    connection = provider.connection
    token = connection.token
    if token is None:
        raise ConflictError("The provider is not connected: authorize it first.")
    now = utcnow()
    if connection.next_retry_at is not None and now < connection.next_retry_at:
        wait = connection.next_retry_at - now
        raise TooManyRequestsError(
            f"Refresh is backing off after {connection.consecutive_failures} failure(s); "
            f"retry after {connection.next_retry_at.isoformat()}.",
            retry_at=connection.next_retry_at,
            retry_after=int(wait.total_seconds()) + 1,
            consecutive_failures=connection.consecutive_failures,
        )
    keyring = keyring_for(settings)
    try:
        refresh_token = open_refresh_token(token, keyring=keyring)
    except DecryptionError:
        refresh_token = None
    if refresh_token is None:
        raise ConflictError("The provider issued no usable refresh token: authorize it again.")
    endpoints = _endpoints(provider, settings, context.base_url)

    try:
        async with http(provider.provider_key) as client:
            grant = await OAuth2Client(endpoints, client).refresh(refresh_token=refresh_token)
    except ProviderError as exc:
        if is_transient(exc):
            await _record_transient_failure(
                session=session, connection=connection, user=user, exc=exc, context=context
            )
            raise ServiceUnavailableError(
                f"The provider is temporarily unavailable ({exc.error}); retry shortly.",
                headers={"Retry-After": str(TRANSIENT_RETRY_AFTER_SECONDS)},
                provider_error=exc.error,
            ) from None
        failures = connection.consecutive_failures + 1
        connection.consecutive_failures = failures
        connection.next_retry_at = now + backoff_after(failures)
        connection.last_error = f"refresh failed: {exc.error}"[:500]
        if failures >= FAILURES_BEFORE_ERROR:
            connection.status = ConnectionStatus.ERROR
        record(
            session=session,
            provider_id=provider.id,
            user_id=user.id,
            action=AuditAction.REFRESH,
            context=context,
            outcome="failure",
            error=exc.error,
            consecutive_failures=failures,
            next_retry_at=connection.next_retry_at.isoformat(),
        )
        await session.commit()
        raise BadGatewayError(
            f"The provider refused the refresh ({exc.error}); "
            f"next attempt allowed after {connection.next_retry_at.isoformat()}.",
            provider_error=exc.error,
            consecutive_failures=failures,
            connection_status=connection.status.value,
            retry_at=connection.next_retry_at.isoformat(),
        ) from None

    rotated = grant.refresh_token is not None and grant.refresh_token != refresh_token
    user_id = user.id  # read now: a retried store leaves these objects expired
    stored = await _store_refreshed_grant(
        session=session,
        connection=connection,
        user=user,
        grant=grant,
        presented=refresh_token,
        settings=settings,
        now=now,
    )
    # The grant is committed: a failing audit write is logged, and no longer loses it.
    await record_separately(
        provider_id=provider_id,
        user_id=user_id,
        action=AuditAction.REFRESH,
        context=context,
        outcome="success",
        rotated=rotated,
        expires_in=grant.expires_in,
    )
    return stored


def _apply_refreshed_grant(
    connection: ProviderConnection,
    grant: TokenGrant,
    *,
    presented: str,
    settings: Settings,
    now: datetime,
) -> None:
    store_grant(connection, grant, keyring=keyring_for(settings), now=now, keep_refresh=presented)
    connection.status = ConnectionStatus.ACTIVE
    connection.last_refreshed_at = now
    connection.refresh_count += 1
    connection.consecutive_failures = 0
    connection.next_retry_at = None
    connection.last_error = None


async def _store_refreshed_grant(
    *,
    session: AsyncSession,
    connection: ProviderConnection,
    user: UserRef,
    grant: TokenGrant,
    presented: str,
    settings: Settings,
    now: datetime,
) -> ConnectionStatusPublic:
    """Commit the provider's new grant: only the token row and the counters, nothing else.

    Once the provider has answered, the presented refresh token is spent (when it rotates), so
    the new one must reach the database: a connection lost on the way (a database restart) is
    retried on a fresh connection for ``STORE_RETRY_DELAYS``. When it still cannot be stored,
    the answer says so (503 with ``rotation_stored: false``) and, where the database takes
    writes, the connection is marked as needing attention instead of claiming "retry shortly".
    """
    provider_id, user_id = connection.provider_id, user.id
    try:
        _apply_refreshed_grant(connection, grant, presented=presented, settings=settings, now=now)
        await session.commit()
        return status_of(connection, connection.token)
    except Exception as exc:
        if not db.is_retryable(exc):
            await _record_lost_rotation(session=session, provider_id=provider_id)
            raise _rotation_not_stored(grant) from None
    with suppress(*db.CONNECTION_LOST):
        await session.invalidate()  # the lock died with its connection; never reuse it

    for delay in STORE_RETRY_DELAYS:
        await asyncio.sleep(delay)
        retry = db.SessionLocal()
        try:
            owner = await retry.get(User, user_id)
            if owner is None:
                raise _rotation_not_stored(grant)  # the account is gone with its connection
            await lock_connection(session=retry, user=owner, provider_id=provider_id)
            connection = (
                await get_provider(
                    session=retry, user=owner, provider_id=provider_id, with_token=True
                )
            ).connection
            _apply_refreshed_grant(
                connection, grant, presented=presented, settings=settings, now=now
            )
            await retry.commit()
            _log.warning("refresh of provider %s stored after a lost connection", provider_id)
            return status_of(connection, connection.token)
        except Exception as exc:
            if not db.is_retryable(exc):
                await _record_lost_rotation(session=retry, provider_id=provider_id)
                raise _rotation_not_stored(grant) from None
        finally:
            await db.close_quietly(retry)
    raise _rotation_not_stored(grant)


def _rotation_not_stored(grant: TokenGrant) -> ServiceUnavailableError:
    _log.error(
        "a refreshed provider grant could not be stored (rotated=%s)", bool(grant.refresh_token)
    )
    return ServiceUnavailableError(
        "The provider issued new tokens, but the database could not store them. "
        + (
            "The provider rotated the refresh token, so the stored one may be refused: if the "
            "next refresh fails, authorize the provider again."
            if grant.refresh_token
            else "The stored refresh token is unchanged: retry shortly."
        ),
        headers={"Retry-After": str(TRANSIENT_RETRY_AFTER_SECONDS)},
        rotation_stored=False,
    )


async def _record_lost_rotation(*, session: AsyncSession, provider_id: uuid.UUID) -> None:
    """Mark the connection (best effort, in a transaction of its own) as possibly unusable."""
    with suppress(Exception):
        await session.rollback()
    marker = db.SessionLocal()
    try:
        await marker.execute(
            update(ProviderConnection)
            .where(ProviderConnection.provider_id == provider_id)
            .values(
                status=ConnectionStatus.ERROR,
                last_error=(
                    "the provider rotated the refresh token but it could not be stored: "
                    "authorize again if refreshing fails"
                ),
            )
        )
        await marker.commit()
    except Exception as exc:  # the answer already tells the client
        _log.error(
            "could not mark provider %s after a lost rotation: %s", provider_id, type(exc).__name__
        )
    finally:
        await db.close_quietly(marker)


def is_transient(exc: ProviderError) -> bool:
    """An outage rather than a refusal: unreachable, overloaded or failing provider."""
    return exc.error == "network_error" or exc.status in _TRANSIENT_STATUSES


async def _record_transient_failure(
    *,
    session: AsyncSession,
    connection: ProviderConnection,
    user: UserRef,
    exc: ProviderError,
    context: RequestContext,
) -> None:
    # Audited, but no backoff and no status change: the refresh token was not refused, and
    # the next attempt may succeed at once.
    connection.last_error = f"refresh failed: {exc.error} (temporary)"[:500]
    record(
        session=session,
        provider_id=connection.provider_id,
        user_id=user.id,
        action=AuditAction.REFRESH,
        context=context,
        outcome="failure",
        error=exc.error,
        transient=True,
    )
    await session.commit()


async def disconnect(
    *,
    session: AsyncSession,
    user: UserRef,
    provider_id: uuid.UUID,
    settings: Settings,
    http: HttpClientFactory,
    context: RequestContext,
) -> None:
    """Delete the provider's tokens, mark the connection revoked, and revoke them upstream.

    The provider is asked to revoke the refresh token (RFC 7009) after the commit, where it
    has a revocation endpoint: locally the tokens are gone either way.
    """
    # Same lock order as a refresh (connection row, then token row): no deadlock between them.
    await lock_connection(session=session, user=user, provider_id=provider_id)
    provider = await get_provider(
        session=session, user=user, provider_id=provider_id, with_token=True
    )
    connection = provider.connection
    token = connection.token
    refresh_token = None
    if token is not None:
        with suppress(DecryptionError):
            refresh_token = open_refresh_token(token, keyring=keyring_for(settings))
        await session.delete(token)
        connection.token = None
    connection.status = ConnectionStatus.REVOKED
    connection.consecutive_failures = 0
    connection.next_retry_at = None
    connection.last_error = None
    await session.execute(
        update(AuthorizationState)
        .where(
            AuthorizationState.provider_id == provider.id, AuthorizationState.consumed_at.is_(None)
        )
        .values(consumed_at=utcnow())
    )
    record(
        session=session,
        provider_id=provider.id,
        user_id=user.id,
        action=AuditAction.DISCONNECT,
        context=context,
        outcome="success",
        tokens_deleted=token is not None,
    )
    await session.commit()
    if refresh_token is not None:
        provider_type = _provider_type(provider.provider_key)
        endpoints = provider_type.endpoints(settings, context.base_url) if provider_type else None
        if endpoints is not None:
            await _revoke_at_provider(
                http=http,
                provider_key=provider.provider_key,
                endpoints=endpoints,
                refresh_token=refresh_token,
            )


async def _revoke_at_provider(
    *,
    http: HttpClientFactory,
    provider_key: str,
    endpoints: OAuth2Endpoints,
    refresh_token: str | None,
) -> None:
    """Best effort: a provider that cannot be reached keeps a grant Dashtam no longer holds."""
    if refresh_token is None:
        return
    try:
        async with http(provider_key) as client:
            await OAuth2Client(endpoints, client).revoke(
                token=refresh_token, token_type_hint="refresh_token"
            )
    except ProviderError as exc:
        _log.warning("provider %s did not revoke a refresh token: %s", provider_key, exc.error)
