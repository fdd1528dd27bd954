"""Failed-login counters per account and per client address, shared by every worker."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from dashtam.models.base import Base


class LoginThrottle(Base):
    """Failures of one ``scope`` (``account`` or ``address``) and ``key`` (a SHA-256 hex)."""

    __tablename__ = "login_throttles"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]
