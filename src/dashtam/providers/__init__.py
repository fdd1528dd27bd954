"""Provider types: how Dashtam speaks OAuth 2.0 to each brokerage (and to its own sandbox)."""

from dashtam.providers.oauth2 import (
    OAuth2Client,
    OAuth2Endpoints,
    ProviderError,
    TokenGrant,
    authorization_url,
)
from dashtam.providers.registry import PROVIDER_TYPES, ProviderType, get_provider_type

__all__ = [
    "PROVIDER_TYPES",
    "OAuth2Client",
    "OAuth2Endpoints",
    "ProviderError",
    "ProviderType",
    "TokenGrant",
    "authorization_url",
    "get_provider_type",
]
