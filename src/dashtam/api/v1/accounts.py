"""``/accounts``: the user's synced accounts, their positions, transactions and balances."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from dashtam.api.deps import CurrentUser, ReadSessionDep
from dashtam.api.v1.pagination import PageParam, SizeParam
from dashtam.models import Account, BalanceSnapshot
from dashtam.providers.brokerage import TransactionType
from dashtam.schemas.accounts import (
    AccountPublic,
    AccountsPublic,
    BalancePublic,
    BalanceSnapshotPublic,
    BalancesPublic,
    PositionPublic,
    PositionsPublic,
    TransactionPublic,
    TransactionsPublic,
)
from dashtam.services import accounts as account_service

router = APIRouter(prefix="/accounts", tags=["accounts"])


def _public(account: Account, balance: BalanceSnapshot | None) -> AccountPublic:
    return AccountPublic(
        id=account.id,
        provider_id=account.provider_id,
        name=account.name,
        type=account.type,
        currency=account.currency,
        number_masked=account.number_masked,
        balance=BalancePublic.model_validate(balance) if balance is not None else None,
    )


@router.get("")
async def list_accounts(
    session: ReadSessionDep,
    user: CurrentUser,
    provider_id: uuid.UUID | None = None,
    page: PageParam = 1,
    size: SizeParam = 20,
) -> AccountsPublic:
    rows, total = await account_service.list_accounts(
        session=session, user=user, provider_id=provider_id, page=page, size=size
    )
    return AccountsPublic(
        items=[_public(account, balance) for account, balance in rows],
        total=total,
        page=page,
        size=size,
    )


@router.get("/{account_id}")
async def get_account(
    session: ReadSessionDep, user: CurrentUser, account_id: uuid.UUID
) -> AccountPublic:
    account, balance = await account_service.get_account_with_balance(
        session=session, user=user, account_id=account_id
    )
    return _public(account, balance)


@router.get("/{account_id}/positions")
async def list_positions(
    session: ReadSessionDep, user: CurrentUser, account_id: uuid.UUID
) -> PositionsPublic:
    positions = await account_service.list_positions(
        session=session, user=user, account_id=account_id
    )
    return PositionsPublic(items=[PositionPublic.model_validate(p) for p in positions])


@router.get("/{account_id}/transactions")
async def list_transactions(
    session: ReadSessionDep,
    user: CurrentUser,
    account_id: uuid.UUID,
    since: Annotated[datetime | None, Query(description="posted at or after")] = None,
    until: Annotated[datetime | None, Query(description="posted at or before")] = None,
    type: TransactionType | None = None,
    page: PageParam = 1,
    size: SizeParam = 20,
) -> TransactionsPublic:
    """Newest first; transactions posted at the same moment keep one order between pages."""
    rows, total = await account_service.list_transactions(
        session=session,
        user=user,
        account_id=account_id,
        since=since,
        until=until,
        type=type.value if type is not None else None,
        page=page,
        size=size,
    )
    return TransactionsPublic(
        items=[TransactionPublic.model_validate(t) for t in rows],
        total=total,
        page=page,
        size=size,
    )


@router.get("/{account_id}/balances")
async def list_balances(
    session: ReadSessionDep,
    user: CurrentUser,
    account_id: uuid.UUID,
    page: PageParam = 1,
    size: SizeParam = 20,
) -> BalancesPublic:
    """Balance snapshots, one per sync, newest first."""
    rows, total = await account_service.list_balances(
        session=session, user=user, account_id=account_id, page=page, size=size
    )
    return BalancesPublic(
        items=[BalanceSnapshotPublic.model_validate(b) for b in rows],
        total=total,
        page=page,
        size=size,
    )
