"""The one place Dashtam reads the time: timezone-aware UTC.

Time can be moved forward for the whole process (tests of lockouts and expiries, without
sleeping)::

    with shifted(timedelta(minutes=16)):
        utcnow()  # 16 minutes from now
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def utcnow() -> datetime:
    return datetime.now(UTC) + _offset


@contextmanager
def shifted(by: timedelta) -> Iterator[None]:
    """Let ``utcnow()`` run ``by`` ahead inside the block."""
    global _offset
    previous = _offset
    _offset = previous + by
    try:
        yield
    finally:
        _offset = previous
