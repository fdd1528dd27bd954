"""An OAuth 2.0 authorization-code client (RFC 6749, PKCE per RFC 7636) over httpx.

The ``httpx.AsyncClient`` is handed in, so the transport is the caller's choice: the network
for Schwab, the app itself (``httpx.ASGITransport``) for the sandbox, ``httpx.MockTransport``
in tests. Example::

    async with httpx.AsyncClient() as http:
        grant = await OAuth2Client(endpoints, http).exchange_code(
            code="abc", redirect_uri="https://app/callback", code_verifier=None
        )
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx


@dataclass(frozen=True, slots=True)
class OAuth2Endpoints:
    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str
    supports_pkce: bool
    scope: str | None = None
    # RFC 7009 token revocation endpoint, where the provider has one.
    revocation_url: str | None = None


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    refresh_token: str | None
    expires_in: int | None
    token_type: str
    scope: str | None


class ProviderError(Exception):
    """The provider refused or failed a token request; ``error`` is the RFC 6749 code."""

    def __init__(self, error: str, description: str, *, status: int | None = None) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


def authorization_url(
    endpoints: OAuth2Endpoints, *, redirect_uri: str, state: str, code_challenge: str | None
) -> str:
    """Where to send the user's browser to grant access (RFC 6749 section 4.1.1)."""
    params = {
        "response_type": "code",
        "client_id": endpoints.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
    }
    if endpoints.scope:
        params["scope"] = endpoints.scope
    if code_challenge is not None:
        params["code_challenge"] = code_challenge
        params["code_challenge_method"] = "S256"
    separator = "&" if "?" in endpoints.authorize_url else "?"
    return f"{endpoints.authorize_url}{separator}{urlencode(params)}"


class OAuth2Client:
    def __init__(self, endpoints: OAuth2Endpoints, http: httpx.AsyncClient) -> None:
        self._endpoints = endpoints
        self._http = http

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None
    ) -> TokenGrant:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        return await self._token_request(form)

    async def refresh(self, *, refresh_token: str) -> TokenGrant:
        return await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )

    async def revoke(self, *, token: str, token_type_hint: str) -> None:
        """Revoke ``token`` at the provider (RFC 7009); a no-op for providers without it."""
        if self._endpoints.revocation_url is None:
            return
        response = await self._post(
            self._endpoints.revocation_url, {"token": token, "token_type_hint": token_type_hint}
        )
        if response.status_code != 200:
            body = _json_object(response)
            error = str(body.get("error") or f"http_{response.status_code}")
            raise ProviderError(error[:100], "revocation refused", status=response.status_code)

    async def _post(self, url: str, form: dict[str, str]) -> httpx.Response:
        auth = httpx.BasicAuth(self._endpoints.client_id, self._endpoints.client_secret)
        try:
            return await self._http.post(
                url, data=form, auth=auth, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise ProviderError("network_error", type(exc).__name__) from None

    async def _token_request(self, form: dict[str, str]) -> TokenGrant:
        response = await self._post(self._endpoints.token_url, form)
        body = _json_object(response)
        if response.status_code != 200:
            error = str(body.get("error") or f"http_{response.status_code}")
            description = str(body.get("error_description") or "token request refused")
            raise ProviderError(error[:100], description[:300], status=response.status_code)
        return _grant_from(body)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _grant_from(body: dict[str, Any]) -> TokenGrant:
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise ProviderError("invalid_response", "token response has no access_token")
    refresh_token = body.get("refresh_token")
    expires_in = body.get("expires_in")
    scope = body.get("scope")
    return TokenGrant(
        access_token=access_token,
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        expires_in=int(expires_in)
        if isinstance(expires_in, int | float) and expires_in > 0
        else None,
        token_type=str(body.get("token_type") or "Bearer")[:40],
        scope=scope[:500] if isinstance(scope, str) else None,
    )
