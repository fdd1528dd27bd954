"""Dashtam's tables. ``Base.metadata`` holds them all (the migrations are their source)."""

from dashtam.models.account import Account, BalanceSnapshot, Position, Transaction
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
from dashtam.models.sandbox import (
    SandboxAccessToken,
    SandboxAuthorizationCode,
    SandboxRefreshToken,
)
from dashtam.models.sync import ACTIVE_SYNC_STATUSES, Sync, SyncStatus
from dashtam.models.user import AuthRefreshToken, AuthSession, User

__all__ = [
    "ACTIVE_SYNC_STATUSES",
    "Account",
    "AuditLog",
    "AuthRefreshToken",
    "AuthSession",
    "AuthorizationState",
    "BalanceSnapshot",
    "Base",
    "ConnectionStatus",
    "LoginThrottle",
    "Position",
    "Provider",
    "ProviderConnection",
    "ProviderToken",
    "SandboxAccessToken",
    "SandboxAuthorizationCode",
    "SandboxRefreshToken",
    "Sync",
    "SyncStatus",
    "Transaction",
    "User",
]
