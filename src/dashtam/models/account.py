"""Brokerage data synced from a provider: accounts, their positions, transactions and balances.

Money is ``NUMERIC`` (``Decimal``) beside its currency, never a float. Positions are replaced
on each sync; transactions are upserted by the provider's id, so a re-sync never duplicates
them; every sync adds one balance snapshot per account.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Numeric, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dashtam.models.base import Base, created_at_column, uuid_pk

MONEY = Numeric(20, 4)
QUANTITY = Numeric(24, 8)


class Account(Base):
    """One account a provider holds for the user (``provider_account_id`` is the provider's)."""

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("provider_id", "provider_account_id"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    provider_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), index=True
    )
    provider_account_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(50))
    currency: Mapped[str] = mapped_column(String(3))
    number_masked: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    positions: Mapped[list[Position]] = relationship(
        lazy="raise", cascade="all, delete-orphan", passive_deletes=True, order_by="Position.symbol"
    )


class Position(Base):
    """A holding as of the last sync."""

    __tablename__ = "positions"

    id: Mapped[uuid.UUID] = uuid_pk()
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    symbol: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[Decimal] = mapped_column(QUANTITY)
    cost_basis: Mapped[Decimal | None] = mapped_column(MONEY)
    market_value: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3))


class Transaction(Base):
    """One activity in an account; ``provider_transaction_id`` is unique per account."""

    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("account_id", "provider_transaction_id"),
        # Newest first, ties broken by id: the listing's order, served by one index.
        Index("ix_transactions_account_posted", "account_id", "posted_at", "id"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    provider_transaction_id: Mapped[str] = mapped_column(String(128))
    posted_at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(32))
    amount: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3))
    symbol: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_at_column()


class BalanceSnapshot(Base):
    """An account's balances as one sync saw them."""

    __tablename__ = "balance_snapshots"
    __table_args__ = (Index("ix_balance_snapshots_account_as_of", "account_id", "as_of", "id"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    sync_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("syncs.id", ondelete="SET NULL"), index=True
    )
    cash: Mapped[Decimal] = mapped_column(MONEY)
    market_value: Mapped[Decimal] = mapped_column(MONEY)
    total: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3))
    as_of: Mapped[datetime]
