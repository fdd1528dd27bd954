"""``/sandbox/oauth``: the built-in OAuth 2.0 authorization server (not under ``/api/v1``)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from dashtam.api.deps import ContextDep, SessionDep, SettingsDep
from dashtam.services import sandbox as sandbox_service

router = APIRouter(prefix="/sandbox/oauth", tags=["sandbox"])

Param = Annotated[str | None, Query(max_length=4096)]
_MAX_FORM_BYTES = 16_384
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.get("/authorize", response_class=RedirectResponse, status_code=302)
async def authorize(
    session: SessionDep,
    settings: SettingsDep,
    context: ContextDep,
    response_type: Param = None,
    client_id: Param = None,
    redirect_uri: Param = None,
    state: Param = None,
    scope: Param = None,
    code_challenge: Param = None,
    code_challenge_method: Param = None,
    decision: Param = None,
) -> RedirectResponse:
    """Approves at once (``decision=deny`` refuses) and redirects back with a code."""
    location = await sandbox_service.authorize(
        session=session,
        settings=settings,
        client_address=context.ip_address,
        request=sandbox_service.AuthorizeRequest(
            response_type=response_type,
            client_id=client_id,
            redirect_uri=redirect_uri,
            state=state,
            scope=scope,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            decision=decision,
        ),
    )
    return RedirectResponse(location, status_code=302)


async def _form(request: Request) -> dict[str, str]:
    raw = await request.body()
    if len(raw) > _MAX_FORM_BYTES:
        raise sandbox_service.OAuthError("invalid_request", "request body too large")
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        raise sandbox_service.OAuthError("invalid_request", "body must be UTF-8") from None


@router.post("/token")
async def token(request: Request, session: SessionDep, settings: SettingsDep) -> JSONResponse:
    """RFC 6749 token endpoint: form-encoded body, client authentication by HTTP Basic."""
    try:
        form = await _form(request)
        body = await sandbox_service.token(
            session=session,
            authorization=request.headers.get("authorization"),
            form=form,
            settings=settings,
        )
    except sandbox_service.OAuthError as exc:
        return _oauth_error(exc)
    return JSONResponse(body, headers=_NO_STORE)


@router.post("/revoke")
async def revoke(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """RFC 7009 revocation endpoint: 200 whether or not the token was known."""
    try:
        await sandbox_service.revoke(
            session=session,
            authorization=request.headers.get("authorization"),
            form=await _form(request),
            settings=settings,
        )
    except sandbox_service.OAuthError as exc:
        return _oauth_error(exc)
    return Response(status_code=200, headers=_NO_STORE)


def _oauth_error(exc: sandbox_service.OAuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="dashtam-sandbox"'
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
