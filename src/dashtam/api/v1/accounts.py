"""``/accounts``: the user's synced accounts, their positions, transactions and balances."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from dashtam.api.deps import ReaderDep
from dashtam.api.v1.pagination import PageParam, SizeParam
from dashtam.providers.brokerage import TransactionType
from dashtam.schemas.accounts import (
    AccountPublic,
    AccountsPublic,
    BalancesPublic,
    PositionsPublic,
    TransactionsPublic,
)
from dashtam.services import accounts as account_service

router = APIRouter(prefix="/accounts", tags=["accounts"])


@router.get("")
async def list_accounts(
    reader: ReaderDep,
    provider_id: uuid.UUID | None = None,
    page: PageParam = 1,
    size: SizeParam = 20,
) -> AccountsPublic:
    return await account_service.list_accounts(
        reader=reader,
        provider_id=provider_id,
        page=page,
        size=size,
    )


@router.get("/{account_id}")
async def get_account(reader: ReaderDep, account_id: uuid.UUID) -> AccountPublic:
    return await account_service.show_account(reader=reader, account_id=account_id)


@router.get("/{account_id}/positions")
async def list_positions(reader: ReaderDep, account_id: uuid.UUID) -> PositionsPublic:
    return await account_service.list_positions(reader=reader, account_id=account_id)


@router.get("/{account_id}/transactions")
async def list_transactions(
    reader: ReaderDep,
    account_id: uuid.UUID,
    since: Annotated[datetime | None, Query(description="posted at or after")] = None,
    until: Annotated[datetime | None, Query(description="posted at or before")] = None,
    type: TransactionType | None = None,
    page: PageParam = 1,
    size: SizeParam = 20,
) -> TransactionsPublic:
    """Newest first; transactions posted at the same moment keep one order between pages."""
    return await account_service.list_transactions(
        reader=reader,
        account_id=account_id,
        since=since,
        until=until,
        type=type.value if type is not None else None,
        page=page,
        size=size,
    )


@router.get("/{account_id}/balances")
async def list_balances(
    reader: ReaderDep,
    account_id: uuid.UUID,
    page: PageParam = 1,
    size: SizeParam = 20,
) -> BalancesPublic:
    """Balance snapshots, one per sync, newest first."""
    return await account_service.list_balances(
        reader=reader,
        account_id=account_id,
        page=page,
        size=size,
    )
