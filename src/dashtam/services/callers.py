"""Who is calling: the user and login session an access token names, read in one statement.

Kept apart from ``auth`` (accounts and logins), so that the read path (``reads``) depends on
this alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dashtam.core import security
from dashtam.core.config import Settings
from dashtam.core.errors import UnauthorizedError
from dashtam.models import AuthSession, User


@dataclass(frozen=True, slots=True)
class CallerUser:
    """The caller's row of ``users``, as read by ``caller_of`` (no ORM object: every
    authenticated request reads it, and loading an entity costs more than the query)."""

    id: uuid.UUID
    email: str
    name: str | None
    password_hash: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The caller of a request: the user and the login session its access token belongs to."""

    user: CallerUser
    session_id: uuid.UUID


# Authentication of a request that writes (and of a read that found nothing, ``reads.Reader``):
# built once (services/paging.py says why), run on the request's connection as a Core
# statement, its row read into ``CallerUser``.
_CALLER = (
    select(
        User.id, User.email, User.name, User.password_hash, User.created_at, AuthSession.revoked_at
    )
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(User.id == bindparam("user_id"), AuthSession.id == bindparam("session_id"))
)


def access_claims(access_token: str, settings: Settings) -> security.AccessClaims:
    """The claims of a valid access token; 401 otherwise (its session is not looked at)."""
    try:
        return security.decode_access_token(access_token, secret=settings.signing_key)
    except security.InvalidTokenError as exc:
        raise UnauthorizedError(f"Access token is invalid: {exc}.") from None


async def caller_of(connection: AsyncConnection, claims: security.AccessClaims) -> Authenticated:
    """The user and login session of valid claims; 401 when the session has ended."""
    found = (
        await connection.execute(
            _CALLER, {"user_id": claims.user_id, "session_id": claims.session_id}
        )
    ).first()
    if found is None:
        raise UnauthorizedError("Access token refers to no user or session.")
    user_id, email, name, password_hash, created_at, revoked_at = found
    if revoked_at is not None:
        raise UnauthorizedError("Access token belongs to a session that has ended.")
    return Authenticated(
        user=CallerUser(
            id=user_id, email=email, name=name, password_hash=password_hash, created_at=created_at
        ),
        session_id=claims.session_id,
    )
