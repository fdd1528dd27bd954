"""``/auth``: register, log in, refresh, me; logout, sessions, password change."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from dashtam.api.deps import (
    ContextDep,
    CurrentCaller,
    ReaderDep,
    SessionDep,
    SettingsDep,
)
from dashtam.schemas.auth import (
    PasswordChange,
    RefreshRequest,
    SessionsPublic,
    TokenPair,
    UserLogin,
    UserPublic,
    UserRegister,
)
from dashtam.services import auth as auth_service

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(
    session: SessionDep, settings: SettingsDep, context: ContextDep, data: UserRegister
) -> UserPublic:
    user = await auth_service.register_user(
        session=session, data=data, settings=settings, context=context
    )
    return UserPublic.model_validate(user)


@router.post("/login")
async def login(
    session: SessionDep, settings: SettingsDep, context: ContextDep, data: UserLogin
) -> TokenPair:
    return await auth_service.login(session=session, data=data, settings=settings, context=context)


@router.post("/refresh")
async def refresh(
    session: SessionDep, settings: SettingsDep, context: ContextDep, data: RefreshRequest
) -> TokenPair:
    return await auth_service.refresh_login(
        session=session, refresh_token=data.refresh_token, settings=settings, context=context
    )


@router.get("/me")
async def me(reader: ReaderDep) -> UserPublic:
    return UserPublic.model_validate((await reader.verify()).user)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(session: SessionDep, caller: CurrentCaller, context: ContextDep) -> Response:
    """End this session: its refresh tokens and access tokens stop working at once."""
    await auth_service.end_session(
        session=session, caller=caller, session_id=caller.session_id, context=context
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/sessions")
async def list_sessions(reader: ReaderDep) -> SessionsPublic:
    """One entry per login (refresh-token family) that has not ended."""
    return await auth_service.list_sessions(reader=reader)


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def end_session(
    session: SessionDep, caller: CurrentCaller, context: ContextDep, session_id: uuid.UUID
) -> Response:
    await auth_service.end_session(
        session=session, caller=caller, session_id=session_id, context=context
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(
    session: SessionDep,
    settings: SettingsDep,
    caller: CurrentCaller,
    context: ContextDep,
    data: PasswordChange,
) -> Response:
    """Set a new password; every other session of the account ends."""
    await auth_service.change_password(
        session=session, caller=caller, data=data, settings=settings, context=context
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
