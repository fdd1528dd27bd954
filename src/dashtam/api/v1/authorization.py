"""``/providers/{id}/authorization``: connect over OAuth 2.0, status, disconnect."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from dashtam.api.deps import (
    ContextDep,
    CurrentUser,
    HttpDep,
    ReaderDep,
    SessionDep,
    SettingsDep,
)
from dashtam.schemas.authorization import AuthorizationStart, ConnectionStatusPublic
from dashtam.services import authorization as authorization_service

router = APIRouter(prefix="/providers/{provider_id}/authorization", tags=["authorization"])

QueryText = Annotated[str | None, Query(max_length=4096)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def start_authorization(
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    context: ContextDep,
    provider_id: uuid.UUID,
) -> AuthorizationStart:
    return await authorization_service.start_authorization(
        session=session, user=user, provider_id=provider_id, settings=settings, context=context
    )


@router.get("/callback")
async def authorization_callback(
    session: SessionDep,
    settings: SettingsDep,
    http: HttpDep,
    context: ContextDep,
    provider_id: uuid.UUID,
    state: Annotated[str, Query(min_length=1, max_length=4096)],
    code: QueryText = None,
    error: QueryText = None,
) -> ConnectionStatusPublic:
    """Where the provider sends the browser back; authenticated by ``state`` alone."""
    return await authorization_service.complete_authorization(
        session=session,
        provider_id=provider_id,
        code=code,
        state=state,
        error=error,
        settings=settings,
        http=http,
        context=context,
    )


@router.get("")
async def authorization_status(reader: ReaderDep, provider_id: uuid.UUID) -> ConnectionStatusPublic:
    return await authorization_service.get_status(reader=reader, provider_id=provider_id)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def disconnect(
    session: SessionDep,
    settings: SettingsDep,
    http: HttpDep,
    user: CurrentUser,
    context: ContextDep,
    provider_id: uuid.UUID,
) -> Response:
    await authorization_service.disconnect(
        session=session,
        user=user,
        provider_id=provider_id,
        settings=settings,
        http=http,
        context=context,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
