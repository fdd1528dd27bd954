"""Reading a user's synced accounts: pages of accounts, positions, transactions, balances.

Each listing runs a fixed number of queries whatever its size (the page with its total,
``paging.fetch_page``, and for accounts their newest balances in one more); another user's
account does not exist.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core.errors import NotFoundError
from dashtam.models import Account, BalanceSnapshot, Position, Provider, Transaction
from dashtam.services.context import UserRef
from dashtam.services.paging import fetch_page, paged


def _owned_by(user: UserRef) -> ColumnElement[bool]:
    return Account.provider_id.in_(select(Provider.id).where(Provider.user_id == user.id))


async def _latest_balances(
    session: AsyncSession, account_ids: list[uuid.UUID]
) -> dict[uuid.UUID, BalanceSnapshot]:
    if not account_ids:
        return {}
    newest_first = func.row_number().over(
        partition_by=BalanceSnapshot.account_id,
        order_by=(BalanceSnapshot.as_of.desc(), BalanceSnapshot.id.desc()),
    )
    ranked = (
        select(BalanceSnapshot.id, newest_first.label("rank"))
        .where(BalanceSnapshot.account_id.in_(account_ids))
        .subquery()
    )
    rows = await session.scalars(
        select(BalanceSnapshot)
        .join(ranked, ranked.c.id == BalanceSnapshot.id)
        .where(ranked.c.rank == 1)
    )
    return {row.account_id: row for row in rows}


async def list_accounts(
    *,
    session: AsyncSession,
    user: UserRef,
    provider_id: uuid.UUID | None,
    page: int,
    size: int,
) -> tuple[list[tuple[Account, BalanceSnapshot | None]], int]:
    """A page of the user's accounts (of one provider, if given), each with its balance."""
    query = select(Account).where(_owned_by(user))
    if provider_id is not None:
        query = query.where(Account.provider_id == provider_id)
    rows, total = await fetch_page(
        on=session,
        statement=paged(query.order_by(Account.created_at, Account.id)),
        params={},
        page=page,
        size=size,
    )
    accounts: list[Account] = [row[0] for row in rows]
    balances = await _latest_balances(session, [account.id for account in accounts])
    return [(account, balances.get(account.id)) for account in accounts], total


async def get_account(*, session: AsyncSession, user: UserRef, account_id: uuid.UUID) -> Account:
    """The user's account; else 404 (whether it is missing or someone else's)."""
    account = await session.scalar(select(Account).where(Account.id == account_id, _owned_by(user)))
    if account is None:
        raise NotFoundError(f"Account {account_id} was not found.")
    return account


async def get_account_with_balance(
    *, session: AsyncSession, user: UserRef, account_id: uuid.UUID
) -> tuple[Account, BalanceSnapshot | None]:
    account = await get_account(session=session, user=user, account_id=account_id)
    balances = await _latest_balances(session, [account.id])
    return account, balances.get(account.id)


async def list_positions(
    *, session: AsyncSession, user: UserRef, account_id: uuid.UUID
) -> list[Position]:
    account = await get_account(session=session, user=user, account_id=account_id)
    rows = await session.scalars(
        select(Position)
        .where(Position.account_id == account.id)
        .order_by(Position.symbol, Position.id)
    )
    return list(rows)


async def list_transactions(
    *,
    session: AsyncSession,
    user: UserRef,
    account_id: uuid.UUID,
    since: datetime | None,
    until: datetime | None,
    type: str | None,
    page: int,
    size: int,
) -> tuple[list[Transaction], int]:
    """Newest first; transactions posted at the same moment in a fixed order (by id)."""
    account = await get_account(session=session, user=user, account_id=account_id)
    query = select(Transaction).where(Transaction.account_id == account.id)
    if since is not None:
        query = query.where(Transaction.posted_at >= since)
    if until is not None:
        query = query.where(Transaction.posted_at <= until)
    if type is not None:
        query = query.where(Transaction.type == type)
    rows, total = await fetch_page(
        on=session,
        statement=paged(query.order_by(Transaction.posted_at.desc(), Transaction.id.desc())),
        params={},
        page=page,
        size=size,
    )
    return [row[0] for row in rows], total


async def list_balances(
    *, session: AsyncSession, user: UserRef, account_id: uuid.UUID, page: int, size: int
) -> tuple[list[BalanceSnapshot], int]:
    """The account's balance snapshots, one per sync, newest first."""
    account = await get_account(session=session, user=user, account_id=account_id)
    rows, total = await fetch_page(
        on=session,
        statement=paged(
            select(BalanceSnapshot)
            .where(BalanceSnapshot.account_id == account.id)
            .order_by(BalanceSnapshot.as_of.desc(), BalanceSnapshot.id.desc())
        ),
        params={},
        page=page,
        size=size,
    )
    return [row[0] for row in rows], total
