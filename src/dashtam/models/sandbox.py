"""The sandbox authorization server's own grants (codes and refresh tokens, hashed)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from dashtam.models.base import Base, created_at_column, uuid_pk


class SandboxAuthorizationCode(Base):
    __tablename__ = "sandbox_authorization_codes"

    id: Mapped[uuid.UUID] = uuid_pk()
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(100))
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    scope: Mapped[str | None] = mapped_column(String(500))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at_column()


class SandboxRefreshToken(Base):
    __tablename__ = "sandbox_refresh_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(100))
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    scope: Mapped[str | None] = mapped_column(String(500))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at_column()


class SandboxAccessToken(Base):
    """An access token the sandbox issued, so its brokerage API can tell whose data to serve.

    It belongs to the grant's ``family_id``: revoking the family (RFC 7009) ends it too.
    """

    __tablename__ = "sandbox_access_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = created_at_column()
