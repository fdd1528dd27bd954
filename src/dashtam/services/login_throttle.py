"""Login throttling per account and per client address, with lockout.

Counters live in PostgreSQL (``login_throttles``), so every worker enforces the same limits.
Each failure is counted by one atomic upsert; ``DASHTAM_LOGIN_MAX_FAILURES_PER_ACCOUNT``
failures within ``DASHTAM_LOGIN_FAILURE_WINDOW_SECONDS`` lock the account for
``DASHTAM_LOGIN_LOCKOUT_SECONDS`` (likewise per address). A locked login is refused with 429
and ``Retry-After`` before the password is even looked at. Keys are SHA-256 digests: the table
holds no email or address in clear.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import case, delete, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core.config import Settings
from dashtam.core.errors import TooManyRequestsError
from dashtam.models import LoginThrottle


class Scope(StrEnum):
    ACCOUNT = "account"
    ADDRESS = "address"


def _key(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _subjects(email: str, address: str | None) -> list[tuple[Scope, str]]:
    subjects = [(Scope.ACCOUNT, _key(email))]
    if address:
        subjects.append((Scope.ADDRESS, _key(address)))
    return subjects


async def ensure_not_locked(
    *, session: AsyncSession, email: str, address: str | None, now: datetime
) -> None:
    """Raise 429 (``Retry-After``) when the account or the address is locked out."""
    conditions = [
        (LoginThrottle.scope == scope.value) & (LoginThrottle.key == key)
        for scope, key in _subjects(email, address)
    ]
    locked_until = await session.scalar(
        select(LoginThrottle.locked_until)
        .where(or_(*conditions), LoginThrottle.locked_until > now)
        .order_by(LoginThrottle.locked_until.desc())
        .limit(1)
    )
    if locked_until is None:
        return
    raise TooManyRequestsError(
        "Too many failed logins: login is locked for a while.",
        retry_at=locked_until,
        retry_after=int((locked_until - now).total_seconds()) + 1,
    )


async def record_failure(
    *, session: AsyncSession, email: str, address: str | None, settings: Settings, now: datetime
) -> None:
    """Count one failed login for the account and the address, locking those over the limit."""
    window_start = now - timedelta(seconds=settings.login_failure_window_seconds)
    lock_until = now + timedelta(seconds=settings.login_lockout_seconds)
    limits = {
        Scope.ACCOUNT: settings.login_max_failures_per_account,
        Scope.ADDRESS: settings.login_max_failures_per_address,
    }
    for scope, key in _subjects(email, address):
        limit = limits[scope]
        window_over = LoginThrottle.window_started_at <= window_start
        failures = case((window_over, 1), else_=LoginThrottle.failures + 1)
        statement = insert(LoginThrottle).values(
            scope=scope.value,
            key=key,
            failures=1,
            window_started_at=now,
            locked_until=lock_until if limit <= 1 else None,
        )
        statement = statement.on_conflict_do_update(
            index_elements=[LoginThrottle.scope, LoginThrottle.key],
            set_={
                "failures": failures,
                "window_started_at": case(
                    (window_over, now), else_=LoginThrottle.window_started_at
                ),
                "locked_until": case(
                    (failures >= limit, lock_until), else_=LoginThrottle.locked_until
                ),
            },
        )
        await session.execute(statement)


async def forget_account_failures(*, session: AsyncSession, email: str) -> None:
    """After a successful login the account starts afresh (the address keeps its count)."""
    await session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.scope == Scope.ACCOUNT.value, LoginThrottle.key == _key(email)
        )
    )
