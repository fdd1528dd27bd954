"""A user's providers, their OAuth connection, its encrypted tokens, and pending states."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, LargeBinary, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dashtam.models.base import Base, created_at_column, uuid_pk


class ConnectionStatus(StrEnum):
    NOT_CONNECTED = "not_connected"
    PENDING = "pending"
    ACTIVE = "active"
    ERROR = "error"
    REVOKED = "revoked"


class Provider(Base):
    """A user's named instance of a provider type (``provider_key``)."""

    __tablename__ = "providers"
    __table_args__ = (UniqueConstraint("user_id", "alias"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    provider_key: Mapped[str] = mapped_column(String(50))
    alias: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    connection: Mapped[ProviderConnection] = relationship(
        back_populates="provider", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )


class ProviderConnection(Base):
    """The OAuth connection of one provider: its state, refresh bookkeeping and backoff."""

    __tablename__ = "provider_connections"

    id: Mapped[uuid.UUID] = uuid_pk()
    provider_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), unique=True
    )
    status: Mapped[ConnectionStatus] = mapped_column(
        Enum(
            ConnectionStatus,
            name="connection_status",
            values_callable=lambda e: [m.value for m in e],
        ),
        default=ConnectionStatus.NOT_CONNECTED,
    )
    connected_at: Mapped[datetime | None]
    last_refreshed_at: Mapped[datetime | None]
    refresh_count: Mapped[int] = mapped_column(default=0)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    next_retry_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))

    provider: Mapped[Provider] = relationship(back_populates="connection", lazy="raise")
    token: Mapped[ProviderToken | None] = relationship(
        back_populates="connection",
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class ProviderToken(Base):
    """The provider's tokens, AES-GCM encrypted; ``key_id`` names the key that sealed them."""

    __tablename__ = "provider_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    connection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="CASCADE"), unique=True
    )
    key_id: Mapped[str] = mapped_column(String(64))
    access_token_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    refresh_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    token_type: Mapped[str] = mapped_column(String(40), default="Bearer")
    scope: Mapped[str | None] = mapped_column(String(500))
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    connection: Mapped[ProviderConnection] = relationship(back_populates="token", lazy="raise")


class AuthorizationState(Base):
    """A pending authorization: what the signed ``state`` refers to; consumed once."""

    __tablename__ = "authorization_states"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    provider_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), index=True
    )
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    key_id: Mapped[str | None] = mapped_column(String(64))
    code_verifier_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime]
    consumed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at_column()
