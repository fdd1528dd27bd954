"""``/providers/{id}/syncs``: ask for a sync of a provider's accounts, and follow it."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, BackgroundTasks, status

from dashtam.api.deps import CurrentUser, HttpDep, SessionDep, SettingsDep
from dashtam.schemas.syncs import SyncPublic, SyncStarted
from dashtam.services import sync as sync_service

router = APIRouter(prefix="/providers/{provider_id}/syncs", tags=["syncs"])


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def request_sync(
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    http: HttpDep,
    background: BackgroundTasks,
    provider_id: uuid.UUID,
) -> SyncStarted:
    """Queue a sync (409 while one is queued or running); follow it at ``/syncs/{id}``."""
    sync = await sync_service.request_sync(
        session=session, user=user, provider_id=provider_id, settings=settings
    )
    if settings.sync_in_api:
        # After the answer is sent; the queued job finds the sync claimed and does nothing.
        background.add_task(
            sync_service.run_next_sync,
            provider_id=provider_id,
            settings=settings,
            http=http,
            base_url=settings.public_url,
        )
    return SyncStarted.model_validate(sync)


@router.get("/{sync_id}")
async def get_sync(
    session: SessionDep, user: CurrentUser, provider_id: uuid.UUID, sync_id: uuid.UUID
) -> SyncPublic:
    sync = await sync_service.get_sync(
        session=session, user=user, provider_id=provider_id, sync_id=sync_id
    )
    return SyncPublic.model_validate(sync)
