"""Provider tokens sealed with the keyring before they reach the database, and opened again."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from dashtam.core.crypto import Keyring, Sealed
from dashtam.models import ProviderConnection, ProviderToken
from dashtam.providers import TokenGrant


def token_aad(connection_id: uuid.UUID, field: str) -> bytes:
    # Binds each ciphertext to its row and column: a sealed token copied elsewhere will not open.
    return f"provider-token:{connection_id}:{field}".encode()


def store_grant(
    connection: ProviderConnection,
    grant: TokenGrant,
    *,
    keyring: Keyring,
    now: datetime,
    keep_refresh: str | None,
) -> None:
    """Seal ``grant`` into the connection's token row (a rotated refresh token replaces the old)."""
    refresh_token = grant.refresh_token or keep_refresh
    access = keyring.encrypt_text(
        grant.access_token, aad=token_aad(connection.id, "access").decode()
    )
    refresh = (
        keyring.encrypt_text(refresh_token, aad=token_aad(connection.id, "refresh").decode())
        if refresh_token
        else None
    )
    expires_at = now + timedelta(seconds=grant.expires_in) if grant.expires_in else None
    token = connection.token
    if token is None:
        connection.token = ProviderToken(
            connection_id=connection.id,
            key_id=access.key_id,
            access_token_encrypted=access.ciphertext,
            refresh_token_encrypted=refresh.ciphertext if refresh else None,
            token_type=grant.token_type,
            scope=grant.scope,
            expires_at=expires_at,
        )
        return
    token.key_id = access.key_id
    token.access_token_encrypted = access.ciphertext
    token.refresh_token_encrypted = refresh.ciphertext if refresh else None
    token.token_type = grant.token_type
    token.scope = grant.scope or token.scope
    token.expires_at = expires_at


def open_refresh_token(token: ProviderToken, *, keyring: Keyring) -> str | None:
    if token.refresh_token_encrypted is None:
        return None
    return keyring.decrypt_text(
        Sealed(token.key_id, token.refresh_token_encrypted),
        aad=token_aad(token.connection_id, "refresh").decode(),
    )


def open_access_token(token: ProviderToken, *, keyring: Keyring) -> str:
    return keyring.decrypt_text(
        Sealed(token.key_id, token.access_token_encrypted),
        aad=token_aad(token.connection_id, "access").decode(),
    )
