"""Request plumbing as ``Annotated`` aliases, so handlers read as their signatures.

Every dependency here is ``async def``: FastAPI runs a plain ``def`` dependency on its thread
pool, a thread hop per request for work that never blocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core import db
from dashtam.core.config import Settings, get_settings
from dashtam.core.errors import UnauthorizedError
from dashtam.services import auth as auth_service
from dashtam.services.callers import Authenticated, CallerUser, access_claims
from dashtam.services.context import HttpClientFactory, RequestContext, http_clients
from dashtam.services.reads import Reader

SessionDep = Annotated[AsyncSession, Depends(db.get_session)]


async def current_settings() -> Settings:
    return get_settings()


SettingsDep = Annotated[Settings, Depends(current_settings)]

_bearer = HTTPBearer(auto_error=False)


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _access_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise UnauthorizedError("Send an access token: Authorization: Bearer <token>.")
    return credentials.credentials


async def _authenticate(
    session: AsyncSession, settings: Settings, credentials: HTTPAuthorizationCredentials | None
) -> Authenticated:
    access_token = _access_token(credentials)
    # A read that no transaction needs: a route that writes then begins its own.
    async with db.reading_briefly(session):
        return await auth_service.authenticate(
            connection=await db.connection_of(session),
            access_token=access_token,
            settings=settings,
        )


async def get_caller(
    session: SessionDep, settings: SettingsDep, credentials: BearerDep
) -> Authenticated:
    return await _authenticate(session, settings, credentials)


CurrentCaller = Annotated[Authenticated, Depends(get_caller)]


async def get_current_user(
    session: SessionDep, settings: SettingsDep, credentials: BearerDep
) -> CallerUser:
    # Authenticates itself rather than depending on ``get_caller``: every level of
    # dependencies costs FastAPI a resolution on every request.
    return (await _authenticate(session, settings, credentials)).user


CurrentUser = Annotated[CallerUser, Depends(get_current_user)]


async def get_reader(credentials: BearerDep) -> AsyncIterator[Reader]:
    # The token is checked here (401 before any connection is taken); its session by the
    # read's own statement (``services.reads``). Settings straight from their cache: a read
    # needs only the signing key.
    claims = access_claims(_access_token(credentials), get_settings())
    async with db.reading() as connection:
        yield Reader(connection, claims)


# Everything a read needs from one dependency: each level of dependencies costs FastAPI a
# resolution on every request. ``scope="function"``: the connection goes back to the pool as
# soon as the route returns, before its answer is serialised and sent.
ReaderDep = Annotated[Reader, Depends(get_reader, scope="function")]


async def get_request_context(request: Request, settings: SettingsDep) -> RequestContext:
    return RequestContext(
        ip_address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        # DASHTAM_PUBLIC_URL, not the Host header: a client must not choose where OAuth
        # providers send the browser back to.
        base_url=settings.public_url.rstrip("/"),
    )


ContextDep = Annotated[RequestContext, Depends(get_request_context)]


async def get_http_client_factory(request: Request) -> HttpClientFactory:
    """Clients for provider calls; transports come from ``app.state.provider_transports``.

    The app registers the sandbox there (in-process, ``httpx.ASGITransport``); tests put an
    ``httpx.MockTransport`` under ``"schwab"``. Providers with no entry use the network.
    """
    transports: dict[str, httpx.AsyncBaseTransport] = request.app.state.provider_transports
    return http_clients(transports)


HttpDep = Annotated[HttpClientFactory, Depends(get_http_client_factory)]
