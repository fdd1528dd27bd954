"""A sync: one run that fetches a provider's accounts and stores them, with its outcome."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from dashtam.models.base import Base, created_at_column, uuid_pk


class SyncStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ACTIVE_SYNC_STATUSES = (SyncStatus.QUEUED, SyncStatus.RUNNING)


class Sync(Base):
    __tablename__ = "syncs"
    __table_args__ = (
        # One sync per provider at a time, whoever asks (the API, the periodic job, a worker).
        Index(
            "uq_syncs_provider_active",
            "provider_id",
            unique=True,
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        Index("ix_syncs_provider_created", "provider_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    status: Mapped[SyncStatus] = mapped_column(
        Enum(SyncStatus, name="sync_status", values_callable=lambda e: [m.value for m in e]),
        default=SyncStatus.QUEUED,
    )
    # "api" or "schedule": who asked for it.
    trigger: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    accounts: Mapped[int] = mapped_column(default=0)
    positions: Mapped[int] = mapped_column(default=0)
    transactions: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(String(1000))
