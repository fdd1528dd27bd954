"""``/auth``: register, log in, refresh, me."""

from __future__ import annotations

from fastapi import APIRouter, status

from dashtam.api.deps import ContextDep, CurrentUser, SessionDep, SettingsDep
from dashtam.schemas.auth import RefreshRequest, TokenPair, UserLogin, UserPublic, UserRegister
from dashtam.services import auth as auth_service

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(
    session: SessionDep, settings: SettingsDep, context: ContextDep, data: UserRegister
) -> UserPublic:
    user = await auth_service.register_user(
        session=session, data=data, settings=settings, client_address=context.ip_address
    )
    return UserPublic.model_validate(user)


@router.post("/login")
async def login(
    session: SessionDep, settings: SettingsDep, context: ContextDep, data: UserLogin
) -> TokenPair:
    return await auth_service.login(
        session=session, data=data, settings=settings, client_address=context.ip_address
    )


@router.post("/refresh")
async def refresh(
    session: SessionDep, settings: SettingsDep, context: ContextDep, data: RefreshRequest
) -> TokenPair:
    return await auth_service.refresh_login(
        session=session,
        refresh_token=data.refresh_token,
        settings=settings,
        client_address=context.ip_address,
    )


@router.get("/me")
async def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
