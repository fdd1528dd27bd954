"""Bodies of ``/providers/{id}/syncs``."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from dashtam.models import SyncStatus


class SyncStarted(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: SyncStatus


class SyncPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_id: uuid.UUID
    status: SyncStatus
    trigger: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    accounts: int
    positions: int
    transactions: int
    error: str | None
