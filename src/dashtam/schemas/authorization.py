"""Bodies of ``/providers/{id}/authorization`` and ``/token-refreshes``."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from dashtam.models import ConnectionStatus


class AuthorizationStart(BaseModel):
    authorization_url: str
    state: str


class ConnectionStatusPublic(BaseModel):
    provider_id: uuid.UUID
    status: ConnectionStatus
    expires_at: datetime | None
    needs_refresh: bool
    connected_at: datetime | None
    last_refreshed_at: datetime | None
    refresh_count: int
    consecutive_failures: int
    next_retry_at: datetime | None
    last_error: str | None
