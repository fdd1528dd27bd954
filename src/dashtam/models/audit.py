"""The audit trail: provider connections and account events.

The provider and user ids are plain values, not foreign keys: an audit row outlives the
provider or user it is about (deleting a provider must not delete its trail).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from dashtam.models.base import Base, created_at_column, uuid_pk


class AuditLog(Base):
    __tablename__ = "audit_logs"

    id: Mapped[uuid.UUID] = uuid_pk()
    # None for account events (login, logout, ...).
    provider_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    # None for a failed login naming no known account.
    user_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    action: Mapped[str] = mapped_column(String(50))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_at_column()
