"""Bodies of ``/provider-types`` and ``/providers``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from dashtam.models import ConnectionStatus
from dashtam.schemas.common import Alias


class ProviderTypePublic(BaseModel):
    key: str
    name: str
    auth_type: str
    supports_pkce: bool
    configured: bool


class ProviderTypesPublic(BaseModel):
    items: list[ProviderTypePublic]


class ProviderCreate(BaseModel):
    provider_key: Annotated[str, Field(min_length=1, max_length=50)]
    alias: Alias


class ProviderUpdate(BaseModel):
    alias: Alias


class ProviderPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_key: str
    alias: str
    status: ConnectionStatus
    created_at: datetime
    updated_at: datetime


class ProvidersPublic(BaseModel):
    items: list[ProviderPublic]
    total: int
    page: int
    size: int
