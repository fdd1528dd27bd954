"""``/providers``: a user's provider instances."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from dashtam.api.deps import CurrentUser, ReaderDep, SessionDep
from dashtam.api.v1.pagination import PageParam, SizeParam
from dashtam.models import Provider
from dashtam.schemas.providers import (
    ProviderCreate,
    ProviderPublic,
    ProvidersPublic,
    ProviderUpdate,
)
from dashtam.services import providers as provider_service

router = APIRouter(prefix="/providers", tags=["providers"])


def _public(provider: Provider) -> ProviderPublic:
    return ProviderPublic(
        id=provider.id,
        provider_key=provider.provider_key,
        alias=provider.alias,
        status=provider.connection.status,
        created_at=provider.created_at,
        updated_at=provider.updated_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_provider(
    session: SessionDep, user: CurrentUser, data: ProviderCreate
) -> ProviderPublic:
    provider = await provider_service.create_provider(session=session, user=user, data=data)
    return _public(provider)


@router.get("")
async def list_providers(
    reader: ReaderDep, page: PageParam = 1, size: SizeParam = 20
) -> ProvidersPublic:
    return await provider_service.list_providers(reader=reader, page=page, size=size)


@router.get("/{provider_id}")
async def get_provider(reader: ReaderDep, provider_id: uuid.UUID) -> ProviderPublic:
    return await provider_service.show_provider(reader=reader, provider_id=provider_id)


@router.patch("/{provider_id}")
async def rename_provider(
    session: SessionDep, user: CurrentUser, provider_id: uuid.UUID, data: ProviderUpdate
) -> ProviderPublic:
    provider = await provider_service.rename_provider(
        session=session, user=user, provider_id=provider_id, data=data
    )
    return _public(provider)


@router.delete("/{provider_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_provider(
    session: SessionDep, user: CurrentUser, provider_id: uuid.UUID
) -> Response:
    await provider_service.delete_provider(session=session, user=user, provider_id=provider_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
