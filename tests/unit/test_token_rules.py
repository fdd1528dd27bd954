"""Token rules: when a token needs refreshing, how failures back off."""

from __future__ import annotations

import uuid
from datetime import timedelta

from dashtam.core.clock import utcnow
from dashtam.models import ConnectionStatus, ProviderConnection, ProviderToken
from dashtam.services.authorization import backoff_after, status_of


def _connection() -> ProviderConnection:
    return ProviderConnection(
        id=uuid.uuid4(),
        provider_id=uuid.uuid4(),
        status=ConnectionStatus.ACTIVE,
        refresh_count=0,
        consecutive_failures=0,
    )


def _token(expires_in: timedelta | None) -> ProviderToken:
    return ProviderToken(
        key_id="k1",
        access_token_encrypted=b"x",
        expires_at=utcnow() + expires_in if expires_in is not None else None,
    )


def test_needs_refresh_when_expired_or_within_five_minutes() -> None:
    connection = _connection()
    assert status_of(connection, _token(timedelta(minutes=30))).needs_refresh is False
    assert status_of(connection, _token(timedelta(minutes=6))).needs_refresh is False
    assert status_of(connection, _token(timedelta(minutes=4))).needs_refresh is True
    assert status_of(connection, _token(timedelta(minutes=-1))).needs_refresh is True
    assert status_of(connection, _token(None)).needs_refresh is False
    assert status_of(connection, None).needs_refresh is False


def test_backoff_doubles_and_is_capped_at_24_hours() -> None:
    assert backoff_after(1) == timedelta(minutes=2)
    assert backoff_after(2) == timedelta(minutes=4)
    assert backoff_after(3) == timedelta(minutes=8)
    waits = [backoff_after(n) for n in range(1, 40)]
    assert waits == sorted(waits)
    assert max(waits) == timedelta(hours=24)
    assert backoff_after(11) == timedelta(hours=24)  # 2**11 minutes > 24 h
    assert backoff_after(10_000) == timedelta(hours=24)
