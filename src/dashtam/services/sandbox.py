"""The sandbox OAuth 2.0 authorization server: codes with PKCE, rotating refresh tokens.

It has one client, ``dashtam-sandbox``, whose secret is derived from Dashtam's secret key.
Its grants live in its own tables, so it works across workers and inside test transactions.
Errors follow RFC 6749 section 5.2 (``{"error": "invalid_grant", ...}``).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core import security
from dashtam.core.clock import utcnow
from dashtam.core.config import Settings
from dashtam.core.errors import BadRequestError
from dashtam.models import SandboxAccessToken, SandboxAuthorizationCode, SandboxRefreshToken
from dashtam.providers.registry import SANDBOX_CLIENT_ID, sandbox_client_secret
from dashtam.services.authorization import is_callback_uri
from dashtam.services.login_throttle import Scope, enforce_rate_limit

_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43,128}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


class OAuthError(Exception):
    """An RFC 6749 token-endpoint error."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    response_type: str | None
    client_id: str | None
    redirect_uri: str | None
    state: str | None
    scope: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    decision: str | None


def _redirect(redirect_uri: str, params: dict[str, str | None]) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    separator = "&" if "?" in redirect_uri else "?"
    return f"{redirect_uri}{separator}{query}"


def _valid_redirect_uri(uri: str | None, settings: Settings) -> str:
    # Its one client is Dashtam itself: redirecting anywhere else would make an open redirect
    # (approval is immediate, without a login).
    if not uri or len(uri) > 2000 or not _PRINTABLE.match(uri):
        raise BadRequestError("redirect_uri is missing or malformed.", title="Invalid Request")
    if not is_callback_uri(uri, settings.public_url):
        raise BadRequestError(
            "redirect_uri must be this Dashtam's authorization callback "
            "(DASHTAM_PUBLIC_URL/api/v1/providers/{id}/authorization/callback).",
            title="Invalid Request",
        )
    return uri


async def authorize(
    *,
    session: AsyncSession,
    request: AuthorizeRequest,
    settings: Settings,
    client_address: str | None = None,
) -> str:
    """Consent (granted at once unless ``decision=deny``): the URL to redirect the browser to."""
    if request.client_id != SANDBOX_CLIENT_ID:
        raise BadRequestError("Unknown client_id for the sandbox.", title="Invalid Client")
    redirect_uri = _valid_redirect_uri(request.redirect_uri, settings)
    await enforce_rate_limit(
        session=session,
        scope=Scope.SANDBOX_AUTHORIZE,
        subject=client_address,
        limit=settings.sandbox_authorize_max_per_address,
        window_seconds=settings.sandbox_authorize_window_seconds,
        now=utcnow(),
    )
    state = request.state if request.state and len(request.state) <= 4096 else None

    def error(code: str, description: str) -> str:
        return _redirect(
            redirect_uri, {"error": code, "error_description": description, "state": state}
        )

    if request.response_type != "code":
        return error("unsupported_response_type", "only response_type=code is supported")
    if request.code_challenge is not None:
        if request.code_challenge_method != "S256":
            return error("invalid_request", "code_challenge_method must be S256")
        if not _CHALLENGE.match(request.code_challenge):
            return error("invalid_request", "code_challenge is malformed")
    if request.decision == "deny":
        return error("access_denied", "the user denied access")
    scope = (
        request.scope
        if request.scope and _PRINTABLE.match(request.scope.replace(" ", "x"))
        else None
    )

    code = security.new_opaque_token()
    session.add(
        SandboxAuthorizationCode(
            code_hash=security.hash_opaque_token(code),
            client_id=SANDBOX_CLIENT_ID,
            redirect_uri=redirect_uri,
            code_challenge=request.code_challenge,
            scope=scope[:500] if scope else None,
            expires_at=utcnow() + timedelta(seconds=settings.sandbox_code_seconds),
        )
    )
    await session.commit()
    return _redirect(redirect_uri, {"code": code, "state": state})


def authenticate_client(
    *, authorization: str | None, form: dict[str, str], settings: Settings
) -> str:
    """The client id, checked by HTTP Basic (or client_secret_post); else ``invalid_client``."""
    client_id: str | None = form.get("client_id")
    client_secret: str | None = form.get("client_secret")
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, ValueError):
            decoded = ""
        client_id, _, client_secret = decoded.partition(":")
    if (
        client_id != SANDBOX_CLIENT_ID
        or not client_secret
        or not security.constant_time_equals(client_secret, sandbox_client_secret(settings))
    ):
        raise OAuthError("invalid_client", "client authentication failed", status=401)
    return client_id


async def token(
    *, session: AsyncSession, authorization: str | None, form: dict[str, str], settings: Settings
) -> dict[str, Any]:
    """The token endpoint (``authorization_code`` and ``refresh_token`` grants)."""
    client_id = authenticate_client(authorization=authorization, form=form, settings=settings)
    grant_type = form.get("grant_type")
    if grant_type == "authorization_code":
        return await _exchange_code(
            session=session, client_id=client_id, form=form, settings=settings
        )
    if grant_type == "refresh_token":
        return await _refresh(session=session, client_id=client_id, form=form, settings=settings)
    raise OAuthError(
        "unsupported_grant_type", "grant_type must be authorization_code or refresh_token"
    )


async def revoke(
    *, session: AsyncSession, authorization: str | None, form: dict[str, str], settings: Settings
) -> None:
    """RFC 7009: revoke a grant, by its refresh token or one of its access tokens.

    The whole grant ends: every refresh token rotated from it and the access tokens it issued
    (the brokerage API refuses them at once). Unknown tokens are not an error (section 2.2):
    the answer is the same either way, so it tells a caller nothing about which tokens exist.
    """
    client_id = authenticate_client(authorization=authorization, form=form, settings=settings)
    presented = form.get("token")
    if not presented:
        raise OAuthError("invalid_request", "token is required")
    token_hash = security.hash_opaque_token(presented)
    family_id = await session.scalar(
        select(SandboxRefreshToken.family_id).where(
            SandboxRefreshToken.token_hash == token_hash,
            SandboxRefreshToken.client_id == client_id,
        )
    ) or await session.scalar(
        select(SandboxAccessToken.family_id).where(SandboxAccessToken.token_hash == token_hash)
    )
    if family_id is None:
        return
    await session.execute(
        update(SandboxRefreshToken)
        .where(
            SandboxRefreshToken.family_id == family_id,
            SandboxRefreshToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    await session.commit()


async def _exchange_code(
    *, session: AsyncSession, client_id: str, form: dict[str, str], settings: Settings
) -> dict[str, Any]:
    code = form.get("code")
    if not code:
        raise OAuthError("invalid_request", "code is required")
    now = utcnow()
    grant = await session.scalar(
        select(SandboxAuthorizationCode)
        .where(SandboxAuthorizationCode.code_hash == security.hash_opaque_token(code))
        .with_for_update()
    )
    if grant is None or grant.used_at is not None or grant.expires_at <= now:
        raise OAuthError("invalid_grant", "the authorization code is invalid, used or expired")
    if grant.client_id != client_id or grant.redirect_uri != form.get("redirect_uri"):
        raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
    if grant.code_challenge is not None:
        verifier = form.get("code_verifier") or ""
        if not verifier or not security.constant_time_equals(
            security.pkce_challenge(verifier) if verifier.isascii() else "", grant.code_challenge
        ):
            raise OAuthError("invalid_grant", "PKCE code_verifier does not match")
    grant.used_at = now
    return await _issue(
        session=session,
        client_id=client_id,
        family_id=uuid.uuid4(),
        scope=grant.scope,
        settings=settings,
    )


async def _refresh(
    *, session: AsyncSession, client_id: str, form: dict[str, str], settings: Settings
) -> dict[str, Any]:
    presented = form.get("refresh_token")
    if not presented:
        raise OAuthError("invalid_request", "refresh_token is required")
    now = utcnow()
    stored = await session.scalar(
        select(SandboxRefreshToken)
        .where(SandboxRefreshToken.token_hash == security.hash_opaque_token(presented))
        .with_for_update()
    )
    if stored is None or stored.client_id != client_id:
        raise OAuthError("invalid_grant", "the refresh token is invalid")
    grace = timedelta(seconds=settings.sandbox_refresh_reuse_grace_seconds)
    retried = (
        stored.used_at is not None and stored.revoked_at is None and now - stored.used_at <= grace
    )
    if not retried and (stored.used_at is not None or stored.revoked_at is not None):
        await session.execute(
            update(SandboxRefreshToken)
            .where(SandboxRefreshToken.family_id == stored.family_id)
            .values(revoked_at=now)
        )
        await session.commit()
        raise OAuthError("invalid_grant", "the refresh token was already used or revoked")
    if stored.expires_at <= now:
        raise OAuthError("invalid_grant", "the refresh token has expired")
    if stored.used_at is None:  # a retry within the grace period does not extend it
        stored.used_at = now
    return await _issue(
        session=session,
        client_id=client_id,
        family_id=stored.family_id,
        scope=stored.scope,
        settings=settings,
    )


async def _issue(
    *,
    session: AsyncSession,
    client_id: str,
    family_id: uuid.UUID,
    scope: str | None,
    settings: Settings,
) -> dict[str, Any]:
    refresh_token = "sbx_rt_" + security.new_opaque_token()
    session.add(
        SandboxRefreshToken(
            token_hash=security.hash_opaque_token(refresh_token),
            client_id=client_id,
            family_id=family_id,
            scope=scope,
            expires_at=utcnow() + timedelta(seconds=settings.sandbox_refresh_token_seconds),
        )
    )
    access_token = "sbx_at_" + security.new_opaque_token()
    # Kept (hashed) so that the sandbox's brokerage API knows whose grant a request carries.
    session.add(
        SandboxAccessToken(
            token_hash=security.hash_opaque_token(access_token),
            family_id=family_id,
            expires_at=utcnow() + timedelta(seconds=settings.sandbox_access_token_seconds),
        )
    )
    await session.commit()
    body: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": settings.sandbox_access_token_seconds,
        "refresh_token": refresh_token,
    }
    if scope:
        body["scope"] = scope
    return body
