"""Bodies of ``/accounts`` and its positions, transactions and balances."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from dashtam.schemas.money import Money, Quantity


class BalancePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    cash: Money
    market_value: Money
    total: Money
    currency: str
    as_of: datetime


class AccountPublic(BaseModel):
    id: uuid.UUID
    provider_id: uuid.UUID
    name: str
    type: str
    currency: str
    number_masked: str
    # None until the first sync has stored a snapshot.
    balance: BalancePublic | None


class AccountsPublic(BaseModel):
    items: list[AccountPublic]
    total: int
    page: int
    size: int


class PositionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    symbol: str
    quantity: Quantity
    cost_basis: Money | None
    market_value: Money
    currency: str


class PositionsPublic(BaseModel):
    items: list[PositionPublic]


class TransactionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_transaction_id: str
    posted_at: datetime
    type: str
    amount: Money
    currency: str
    symbol: str | None
    description: str | None


class TransactionsPublic(BaseModel):
    items: list[TransactionPublic]
    total: int
    page: int
    size: int


class BalanceSnapshotPublic(BalancePublic):
    id: uuid.UUID
    sync_id: uuid.UUID | None


class BalancesPublic(BaseModel):
    items: list[BalanceSnapshotPublic]
    total: int
    page: int
    size: int
