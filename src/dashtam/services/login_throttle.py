"""Login throttling per account and per client address, and request limits per address.

Counters live in PostgreSQL (``login_throttles``), so every worker enforces the same limits.
Keys are SHA-256 digests: the table holds no email or address in clear.

Every login attempt is counted *before* its password is checked, under the counters' row
locks, so concurrent guesses cannot all slip through before the first failure is recorded;
a correct password then takes its attempt back.

- Per account: ``DASHTAM_LOGIN_MAX_FAILURES_PER_ACCOUNT`` attempts within the window are free;
  each further one first waits a delay that doubles from 1 s up to
  ``DASHTAM_LOGIN_MAX_DELAY_SECONDS`` (60 s at most). Anyone who knows an email can cause the
  delay, so it never grows into a lockout: the owner waits at most a minute.
- Per client address: ``DASHTAM_LOGIN_MAX_FAILURES_PER_ADDRESS`` failures within the window
  block that address for ``DASHTAM_LOGIN_LOCKOUT_SECONDS``: the longer block falls on whoever
  guesses, not on the account guessed at.

Throttled requests get 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import case, delete, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core.config import Settings
from dashtam.core.errors import TooManyRequestsError
from dashtam.models import LoginThrottle


class Scope(StrEnum):
    ACCOUNT = "account"
    ADDRESS = "address"
    REGISTER = "register"
    AUTH_REFRESH = "auth-refresh"
    SANDBOX_AUTHORIZE = "sandbox"  # the column holds 16 characters


def _key(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _subjects(email: str, address: str | None) -> list[tuple[Scope, str]]:
    # Always account before address: one lock order for every attempt, so no deadlock.
    subjects = [(Scope.ACCOUNT, _key(email))]
    if address:
        subjects.append((Scope.ADDRESS, _key(address)))
    return subjects


def account_delay(failures: int, settings: Settings) -> timedelta:
    """How long an account waits after ``failures`` attempts (zero while under the limit)."""
    over = failures - settings.login_max_failures_per_account
    if over < 0:
        return timedelta(0)
    # 2**6 already exceeds the 60 s cap: no need for larger powers.
    return timedelta(seconds=min(2 ** min(over, 6), settings.login_max_delay_seconds))


def _throttled(locked_until: datetime, now: datetime, detail: str) -> TooManyRequestsError:
    return TooManyRequestsError(
        detail,
        retry_at=locked_until,
        # Rounded up, never past the wait itself: a 60 s delay says Retry-After: 60.
        retry_after=math.ceil((locked_until - now).total_seconds()),
    )


async def count_login_attempt(
    *, session: AsyncSession, email: str, address: str | None, settings: Settings, now: datetime
) -> None:
    """Count this attempt as a failure, committed, before the password is checked; else 429.

    Raises 429 (``Retry-After``) without counting when the account is within its delay or the
    address is blocked.
    """
    subjects = _subjects(email, address)
    # One statement creates the missing counters and locks all of them (a no-op update takes
    # the row lock): the lock is held for this statement, the update and the commit only.
    upsert = insert(LoginThrottle).values(
        [
            {"scope": scope.value, "key": key, "failures": 0, "window_started_at": now}
            for scope, key in subjects
        ]
    )
    upsert = upsert.on_conflict_do_update(
        index_elements=[LoginThrottle.scope, LoginThrottle.key],
        set_={"failures": LoginThrottle.failures},
    )
    rows = {
        (row.scope, row.key): row
        for row in await session.scalars(
            upsert.returning(LoginThrottle),
            execution_options={"populate_existing": True},
        )
    }
    window = timedelta(seconds=settings.login_failure_window_seconds)
    for scope, key in subjects:
        locked_until = rows[(scope.value, key)].locked_until
        if locked_until is not None and locked_until > now:
            await session.rollback()
            raise _throttled(
                locked_until,
                now,
                "Too many failed logins for this account: wait before trying again."
                if scope is Scope.ACCOUNT
                else "Too many failed logins from this address: login is blocked for a while.",
            )
    for scope, key in subjects:
        row = rows[(scope.value, key)]
        if row.window_started_at <= now - window:
            row.failures, row.window_started_at = 0, now
        row.failures += 1
        if scope is Scope.ACCOUNT:
            delay = account_delay(row.failures, settings)
            row.locked_until = now + delay if delay else None
        elif row.failures >= settings.login_max_failures_per_address:
            row.locked_until = now + timedelta(seconds=settings.login_lockout_seconds)
    await session.commit()


async def take_back_login_attempt(
    *, session: AsyncSession, email: str, address: str | None, settings: Settings
) -> None:
    """A correct password: the account starts afresh, the address gets its attempt back.

    Committed at once: the address's row is shared by every login from there.
    """
    await session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.scope == Scope.ACCOUNT.value, LoginThrottle.key == _key(email)
        )
    )
    if address:
        remaining = LoginThrottle.failures - 1
        await session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.scope == Scope.ADDRESS.value, LoginThrottle.key == _key(address))
            .values(
                failures=case((remaining > 0, remaining), else_=0),
                # Only this attempt can have set a block below the limit: lift it again.
                locked_until=case(
                    (remaining < settings.login_max_failures_per_address, None),
                    else_=LoginThrottle.locked_until,
                ),
            )
        )
    await session.commit()


async def enforce_rate_limit(
    *,
    session: AsyncSession,
    scope: Scope,
    subject: str | None,
    limit: int,
    window_seconds: int,
    now: datetime,
) -> None:
    """Count one request of ``subject`` (a client address) in a fixed window; 429 past ``limit``.

    Committed at once, so a request refused later still counts.
    """
    if not subject:
        return
    window_over = LoginThrottle.window_started_at <= now - timedelta(seconds=window_seconds)
    statement = (
        insert(LoginThrottle)
        .values(scope=scope.value, key=_key(subject), failures=1, window_started_at=now)
        .on_conflict_do_update(
            index_elements=[LoginThrottle.scope, LoginThrottle.key],
            set_={
                "failures": case((window_over, 1), else_=LoginThrottle.failures + 1),
                "window_started_at": case(
                    (window_over, now), else_=LoginThrottle.window_started_at
                ),
            },
        )
        .returning(LoginThrottle.failures, LoginThrottle.window_started_at)
    )
    count, window_started_at = (await session.execute(statement)).one()
    await session.commit()
    if count > limit:
        raise _throttled(
            window_started_at + timedelta(seconds=window_seconds),
            now,
            f"Too many requests from this address (at most {limit} in {window_seconds} s).",
        )
