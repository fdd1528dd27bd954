"""The provider types Dashtam knows, by key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from dashtam.core.config import Settings
from dashtam.core.security import derive_secret
from dashtam.providers.brokerage import BrokerageClient
from dashtam.providers.oauth2 import OAuth2Endpoints
from dashtam.providers.sandbox_api import SandboxBrokerage
from dashtam.providers.schwab_api import SchwabBrokerage

SANDBOX_CLIENT_ID = "dashtam-sandbox"


def sandbox_client_secret(settings: Settings) -> str:
    """The sandbox's one client secret, derived so that no extra setting is needed."""
    return derive_secret(settings.signing_key, "sandbox-client-secret")


@dataclass(frozen=True, slots=True)
class ProviderType:
    key: str
    name: str
    supports_pkce: bool
    # base_url: where this Dashtam is reachable (the sandbox lives inside it)
    endpoints: Callable[[Settings, str], OAuth2Endpoints | None]
    # (http, access_token, settings, base_url): a reader of the provider's accounts
    brokerage: Callable[[httpx.AsyncClient, str, Settings, str], BrokerageClient]
    missing_settings: tuple[str, ...] = ()

    def is_configured(self, settings: Settings) -> bool:
        return self.endpoints(settings, settings.public_url) is not None


def _sandbox_endpoints(settings: Settings, base_url: str) -> OAuth2Endpoints | None:
    if not settings.sandbox_is_enabled:
        return None
    base = base_url.rstrip("/")
    return OAuth2Endpoints(
        authorize_url=f"{base}/sandbox/oauth/authorize",
        token_url=f"{base}/sandbox/oauth/token",
        client_id=SANDBOX_CLIENT_ID,
        client_secret=sandbox_client_secret(settings),
        supports_pkce=True,
        scope="accounts:read",
        revocation_url=f"{base}/sandbox/oauth/revoke",
    )


def _schwab_endpoints(settings: Settings, base_url: str) -> OAuth2Endpoints | None:
    if not settings.schwab_client_id or not settings.schwab_client_secret:
        return None
    return OAuth2Endpoints(
        authorize_url=settings.schwab_authorize_url,
        token_url=settings.schwab_token_url,
        client_id=settings.schwab_client_id,
        client_secret=settings.schwab_client_secret,
        supports_pkce=False,
    )


def _sandbox_brokerage(
    http: httpx.AsyncClient, access_token: str, settings: Settings, base_url: str
) -> BrokerageClient:
    return SandboxBrokerage(http, base_url=base_url, access_token=access_token)


def _schwab_brokerage(
    http: httpx.AsyncClient, access_token: str, settings: Settings, base_url: str
) -> BrokerageClient:
    return SchwabBrokerage(http, api_url=settings.schwab_api_url, access_token=access_token)


PROVIDER_TYPES: dict[str, ProviderType] = {
    "sandbox": ProviderType(
        key="sandbox",
        name="Dashtam Sandbox (built-in OAuth 2.0 server)",
        supports_pkce=True,
        endpoints=_sandbox_endpoints,
        brokerage=_sandbox_brokerage,
        missing_settings=("DASHTAM_SANDBOX_ENABLED=true",),
    ),
    "schwab": ProviderType(
        key="schwab",
        name="Charles Schwab",
        supports_pkce=False,
        endpoints=_schwab_endpoints,
        brokerage=_schwab_brokerage,
        missing_settings=("DASHTAM_SCHWAB_CLIENT_ID", "DASHTAM_SCHWAB_CLIENT_SECRET"),
    ),
}


def get_provider_type(key: str) -> ProviderType | None:
    return PROVIDER_TYPES.get(key)
