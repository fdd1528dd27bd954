"""Reading a user's synced accounts: pages of accounts, positions, transactions, balances.

Core statements for the caller (``reads.for_caller``), built once (paging.py says why), whose
rows become the public schemas directly (validated from dicts: ``reads.as_dicts``). Each read
is one statement, the caller's authentication included: an account's rows are selected
through the caller's ownership of the account, and only an empty answer costs more
statements, to tell an account without rows from one that is not the caller's (404, whether
it is missing or someone else's).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Row, bindparam, select, true

from dashtam.core.errors import NotFoundError
from dashtam.models import Account, BalanceSnapshot, Position, Provider, Transaction
from dashtam.schemas.accounts import (
    AccountPublic,
    AccountsPublic,
    BalancesPublic,
    PositionsPublic,
    TransactionsPublic,
)
from dashtam.services.paging import paged
from dashtam.services.reads import CallerSelect, Reader, as_dicts, for_caller

_OWNED_ACCOUNTS = select(Account.id).join(Provider, Provider.id == Account.provider_id)
_OWNED = _OWNED_ACCOUNTS.where(
    Account.id == bindparam("account_id"), Provider.user_id == bindparam("user_id")
)

# An account's newest balance snapshot, or NULLs before its first sync.
_NEWEST_BALANCE = (
    select(
        BalanceSnapshot.cash,
        BalanceSnapshot.market_value,
        BalanceSnapshot.total,
        BalanceSnapshot.currency.label("balance_currency"),
        BalanceSnapshot.as_of,
    )
    .where(BalanceSnapshot.account_id == Account.id)
    .order_by(BalanceSnapshot.as_of.desc(), BalanceSnapshot.id.desc())
    .limit(1)
    .lateral("newest_balance")
)
_ACCOUNTS = (
    select(
        Account.id,
        Account.provider_id,
        Account.name,
        Account.type,
        Account.currency,
        Account.number_masked,
        *_NEWEST_BALANCE.c,
    )
    .join(Provider, Provider.id == Account.provider_id)
    .outerjoin(_NEWEST_BALANCE, true())
    .where(Provider.user_id == bindparam("user_id"))
)
_ACCOUNTS_PAGE = for_caller(paged(_ACCOUNTS.order_by(Account.created_at, Account.id)))
_PROVIDERS_ACCOUNTS_PAGE = for_caller(
    paged(
        _ACCOUNTS.where(Account.provider_id == bindparam("provider_id")).order_by(
            Account.created_at, Account.id
        )
    )
)
_ONE_ACCOUNT = for_caller(_ACCOUNTS.where(Account.id == bindparam("account_id")))

_POSITIONS = for_caller(
    select(
        Position.symbol,
        Position.quantity,
        Position.cost_basis,
        Position.market_value,
        Position.currency,
    )
    .where(Position.account_id.in_(_OWNED))
    .order_by(Position.symbol, Position.id)
)
_BALANCES_PAGE = for_caller(
    paged(
        select(
            BalanceSnapshot.cash,
            BalanceSnapshot.market_value,
            BalanceSnapshot.total,
            BalanceSnapshot.currency,
            BalanceSnapshot.as_of,
            BalanceSnapshot.id,
            BalanceSnapshot.sync_id,
        )
        .where(BalanceSnapshot.account_id.in_(_OWNED))
        .order_by(BalanceSnapshot.as_of.desc(), BalanceSnapshot.id.desc())
    )
)


@cache
def _transactions_page(*, since: bool, until: bool, type: bool) -> CallerSelect:
    """The transactions listing with the filters given: one statement per combination."""
    query = select(
        Transaction.id,
        Transaction.provider_transaction_id,
        Transaction.posted_at,
        Transaction.type,
        Transaction.amount,
        Transaction.currency,
        Transaction.symbol,
        Transaction.description,
    ).where(Transaction.account_id.in_(_OWNED))
    if since:
        query = query.where(Transaction.posted_at >= bindparam("since"))
    if until:
        query = query.where(Transaction.posted_at <= bindparam("until"))
    if type:
        query = query.where(Transaction.type == bindparam("type"))
    return for_caller(paged(query.order_by(Transaction.posted_at.desc(), Transaction.id.desc())))


def _not_found(account_id: uuid.UUID) -> NotFoundError:
    return NotFoundError(f"Account {account_id} was not found.")


async def _require_account(reader: Reader, account_id: uuid.UUID) -> None:
    """404 unless the account is the caller's (after a read of its rows found none, and so
    confirmed the caller)."""
    owned = await reader.connection.scalar(
        _OWNED, {"account_id": account_id, "user_id": reader.user.id}
    )
    if owned is None:
        raise _not_found(account_id)


# The balance's keys in ``BalancePublic``, and their columns in ``_ACCOUNTS``.
_BALANCE_COLUMNS = {
    "cash": "cash",
    "market_value": "market_value",
    "total": "total",
    "currency": "balance_currency",
    "as_of": "as_of",
}


def _account(row: Row[*tuple[Any, ...]]) -> dict[str, Any]:
    """An ``AccountPublic``'s fields, its newest balance nested (``None`` before any)."""
    fields = dict(zip(row._fields, row, strict=True))
    balance = {key: fields.pop(column) for key, column in _BALANCE_COLUMNS.items()}
    fields["balance"] = balance if balance["as_of"] is not None else None
    return fields


async def list_accounts(
    *, reader: Reader, provider_id: uuid.UUID | None, page: int, size: int
) -> AccountsPublic:
    """A page of the caller's accounts (of one provider, if given), each with its balance."""
    if provider_id is None:
        rows, total = await reader.page(_ACCOUNTS_PAGE, None, page=page, size=size)
    else:
        rows, total = await reader.page(
            _PROVIDERS_ACCOUNTS_PAGE, {"provider_id": provider_id}, page=page, size=size
        )
    return AccountsPublic.model_validate(
        {"items": [_account(row) for row in rows], "total": total, "page": page, "size": size}
    )


async def show_account(*, reader: Reader, account_id: uuid.UUID) -> AccountPublic:
    """The caller's account with its newest balance; else 404."""
    row = await reader.first(_ONE_ACCOUNT, {"account_id": account_id})
    if row is None:
        raise _not_found(account_id)
    return AccountPublic.model_validate(_account(row))


async def list_positions(*, reader: Reader, account_id: uuid.UUID) -> PositionsPublic:
    rows = await reader.rows(_POSITIONS, {"account_id": account_id})
    if not rows:
        await _require_account(reader, account_id)
    return PositionsPublic.model_validate({"items": as_dicts(rows)})


async def list_transactions(
    *,
    reader: Reader,
    account_id: uuid.UUID,
    since: datetime | None,
    until: datetime | None,
    type: str | None,
    page: int,
    size: int,
) -> TransactionsPublic:
    """Newest first; transactions posted at the same moment in a fixed order (by id)."""
    filters = {"since": since, "until": until, "type": type}
    rows, total = await reader.page(
        _transactions_page(since=since is not None, until=until is not None, type=type is not None),
        {
            "account_id": account_id,
            **{name: value for name, value in filters.items() if value is not None},
        },
        page=page,
        size=size,
    )
    if not rows:
        await _require_account(reader, account_id)
    return TransactionsPublic.model_validate(
        {"items": as_dicts(rows), "total": total, "page": page, "size": size}
    )


async def list_balances(
    *, reader: Reader, account_id: uuid.UUID, page: int, size: int
) -> BalancesPublic:
    """The account's balance snapshots, one per sync, newest first."""
    rows, total = await reader.page(
        _BALANCES_PAGE, {"account_id": account_id}, page=page, size=size
    )
    if not rows:
        await _require_account(reader, account_id)
    return BalancesPublic.model_validate(
        {"items": as_dicts(rows), "total": total, "page": page, "size": size}
    )
