"""Dashtam's tables. ``Base.metadata`` holds them all (the migrations are their source)."""

from dashtam.models.audit import AuditLog
from dashtam.models.base import Base
from dashtam.models.login_throttle import LoginThrottle
from dashtam.models.provider import (
    AuthorizationState,
    ConnectionStatus,
    Provider,
    ProviderConnection,
    ProviderToken,
)
from dashtam.models.sandbox import SandboxAuthorizationCode, SandboxRefreshToken
from dashtam.models.user import AuthRefreshToken, AuthSession, User

__all__ = [
    "AuditLog",
    "AuthRefreshToken",
    "AuthSession",
    "AuthorizationState",
    "Base",
    "ConnectionStatus",
    "LoginThrottle",
    "Provider",
    "ProviderConnection",
    "ProviderToken",
    "SandboxAuthorizationCode",
    "SandboxRefreshToken",
    "User",
]
