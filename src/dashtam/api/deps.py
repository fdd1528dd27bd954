"""Request plumbing as ``Annotated`` aliases, so handlers read as their signatures."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core.config import Settings, get_settings
from dashtam.core.db import get_session
from dashtam.core.errors import UnauthorizedError
from dashtam.models import User
from dashtam.services import auth as auth_service
from dashtam.services.context import HttpClientFactory, RequestContext, http_clients

SessionDep = Annotated[AsyncSession, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

_bearer = HTTPBearer(auto_error=False)


async def get_caller(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> auth_service.Authenticated:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise UnauthorizedError("Send an access token: Authorization: Bearer <token>.")
    return await auth_service.authenticate(
        session=session, access_token=credentials.credentials, settings=settings
    )


CurrentCaller = Annotated[auth_service.Authenticated, Depends(get_caller)]


def get_current_user(caller: CurrentCaller) -> User:
    return caller.user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_request_context(request: Request, settings: SettingsDep) -> RequestContext:
    return RequestContext(
        ip_address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        # DASHTAM_PUBLIC_URL, not the Host header: a client must not choose where OAuth
        # providers send the browser back to.
        base_url=settings.public_url.rstrip("/"),
    )


ContextDep = Annotated[RequestContext, Depends(get_request_context)]


def get_http_client_factory(request: Request) -> HttpClientFactory:
    """Clients for provider calls; transports come from ``app.state.provider_transports``.

    The app registers the sandbox there (in-process, ``httpx.ASGITransport``); tests put an
    ``httpx.MockTransport`` under ``"schwab"``. Providers with no entry use the network.
    """
    transports: dict[str, httpx.AsyncBaseTransport] = request.app.state.provider_transports
    return http_clients(transports)


HttpDep = Annotated[HttpClientFactory, Depends(get_http_client_factory)]
