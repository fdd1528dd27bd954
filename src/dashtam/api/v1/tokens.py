"""``/providers/{id}/token-refreshes``: refresh a provider's tokens now."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from dashtam.api.deps import ContextDep, CurrentUser, HttpDep, SessionDep, SettingsDep
from dashtam.schemas.authorization import ConnectionStatusPublic
from dashtam.services import authorization as authorization_service

router = APIRouter(prefix="/providers/{provider_id}/token-refreshes", tags=["tokens"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def refresh_tokens(
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    http: HttpDep,
    context: ContextDep,
    provider_id: uuid.UUID,
) -> ConnectionStatusPublic:
    return await authorization_service.refresh_tokens(
        session=session,
        user=user,
        provider_id=provider_id,
        settings=settings,
        http=http,
        context=context,
    )
