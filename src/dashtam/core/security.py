"""Passwords, access tokens, opaque tokens and signed values.

- passwords: argon2id (``argon2-cffi``), rehashed when parameters change, computed on a
  small thread pool (``DASHTAM_PASSWORD_HASH_CONCURRENCY`` at once) so the event loop keeps
  serving while a hash runs, and a burst of logins cannot take every core;
- access tokens: short-lived HS256 JWTs carrying the user id and the login session's id;
- opaque tokens (refresh tokens, authorization codes): random, stored only as SHA-256;
- signed values (the OAuth ``state``): JWTs with their own audience and expiry.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from dashtam.core.clock import utcnow
from dashtam.core.config import get_settings

_ALGORITHM = "HS256"
_ACCESS_AUDIENCE = "dashtam:access"


class InvalidTokenError(ValueError):
    """A token that is malformed, tampered with, expired or meant for something else."""


@lru_cache(maxsize=4)
def _hasher_with(time_cost: int, memory_kib: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


def _hasher() -> PasswordHasher:
    """argon2id with the configured cost (hashes record their parameters, so cost can change)."""
    settings = get_settings()
    return _hasher_with(settings.password_hash_time_cost, settings.password_hash_memory_kib)


@lru_cache(maxsize=1)
def _hash_pool() -> ThreadPoolExecutor:
    # argon2-cffi releases the GIL while hashing: the loop thread runs on meanwhile. The pool's
    # size bounds the hashes running at once; more wait in its queue, not on the event loop.
    return ThreadPoolExecutor(
        max_workers=get_settings().password_hash_concurrency, thread_name_prefix="argon2"
    )


def _dummy_hash() -> str:
    # Verified against when the email is unknown, so both paths cost one argon2 verification.
    return _dummy_hash_with(_hasher())


@lru_cache(maxsize=4)
def _dummy_hash_with(hasher: PasswordHasher) -> str:
    return hasher.hash("dashtam-no-such-user")


def _verify_blocking(password: str, password_hash: str | None) -> bool:
    try:
        matched = _hasher().verify(password_hash or _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return matched and password_hash is not None


async def hash_password(password: str) -> str:
    """The argon2id hash of ``password``, computed off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_hash_pool(), _hasher().hash, password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    """True when ``password`` matches; spends the same effort when there is no hash."""
    return await asyncio.get_running_loop().run_in_executor(
        _hash_pool(), _verify_blocking, password, password_hash
    )


def password_needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than the configured ones."""
    try:
        return _hasher().check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def new_opaque_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def hash_opaque_token(token: str) -> str:
    """SHA-256 suffices: opaque tokens carry 256 random bits, unlike passwords."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID


def create_access_token(
    *, user_id: uuid.UUID, session_id: uuid.UUID, secret: str, lifetime: timedelta
) -> AccessToken:
    """An access token of ``user_id``'s login session ``session_id`` (refused once it ends)."""
    now = utcnow()
    claims = {
        "sub": str(user_id),
        "sid": str(session_id),
        "aud": _ACCESS_AUDIENCE,
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, secret, algorithm=_ALGORITHM)
    return AccessToken(token=token, expires_in=int(lifetime.total_seconds()))


def decode_access_token(token: str, *, secret: str) -> AccessClaims:
    """The claims of a valid, unexpired access token (``InvalidTokenError`` otherwise)."""
    claims, expires_at = _verified_access_token(token, secret)
    # As PyJWT checks it, on every call: a token verified before can have expired since.
    if expires_at <= time.time():
        raise InvalidTokenError("token has expired")
    return claims


@lru_cache(maxsize=4096)
def _verified_access_token(token: str, secret: str) -> tuple[AccessClaims, float]:
    # A client sends the same token with every request until it expires, and verifying it
    # (HMAC, PyJWT's checks) costs more CPU than the rest of authentication: a token is
    # verified once. Only valid tokens are kept (a raise is not cached), and whether its login
    # session still stands is the database's answer, asked on every request.
    claims = _decode(token, secret=secret, audience=_ACCESS_AUDIENCE)
    try:
        return (
            AccessClaims(
                user_id=uuid.UUID(str(claims["sub"])), session_id=uuid.UUID(str(claims["sid"]))
            ),
            float(claims["exp"]),
        )
    except (KeyError, ValueError) as exc:
        raise InvalidTokenError("access token has no valid subject or session") from exc


def sign_value(claims: dict[str, Any], *, secret: str, audience: str, expires_at: datetime) -> str:
    """A compact signed value binding ``claims`` to ``audience`` until ``expires_at``."""
    payload = {**claims, "aud": audience, "iat": utcnow(), "exp": expires_at}
    return jwt.encode(payload, secret, algorithm=_ALGORITHM)


def unsign_value(token: str, *, secret: str, audience: str) -> dict[str, Any]:
    return _decode(token, secret=secret, audience=audience)


def _decode(token: str, *, secret: str, audience: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            audience=audience,
            options={"require": ["exp", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidTokenError("token has expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidTokenError("token is invalid") from exc
    return claims


def derive_secret(secret: str, purpose: str) -> str:
    """A secret for ``purpose`` derived from the main secret key (HMAC-SHA256)."""
    digest = hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def pkce_pair() -> tuple[str, str]:
    """A PKCE ``(code_verifier, code_challenge)`` for the S256 method (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
