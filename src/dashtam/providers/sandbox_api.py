"""The sandbox's brokerage API (``/sandbox/api``) read into Dashtam's shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from dashtam.providers.brokerage import (
    AccountData,
    BrokerageError,
    PositionData,
    TransactionData,
    TransactionType,
    UnreadableAccount,
    decimal,
    field,
    get_json,
    mask_number,
    read_each,
    text,
    timestamp,
)


class SandboxBrokerage:
    def __init__(self, http: httpx.AsyncClient, *, base_url: str, access_token: str) -> None:
        self._http = http
        self._api = f"{base_url.rstrip('/')}/sandbox/api"
        self._token = access_token

    async def accounts(self) -> list[AccountData | UnreadableAccount]:
        body = await get_json(self._http, f"{self._api}/accounts", access_token=self._token)
        items = field(body, "accounts", "accounts")
        if not isinstance(items, list):
            raise BrokerageError("accounts: 'accounts' is not a list")
        return read_each(items, _account)

    async def transactions(
        self, account: AccountData, *, since: datetime, until: datetime
    ) -> list[TransactionData]:
        body = await get_json(
            self._http,
            f"{self._api}/accounts/{account.handle}/transactions",
            access_token=self._token,
            params={"start": since.isoformat(), "end": until.isoformat()},
        )
        items = field(body, "transactions", "transactions")
        if not isinstance(items, list):
            raise BrokerageError("transactions: 'transactions' is not a list")
        return [_transaction(item, account.currency) for item in items]


def _account(item: Any) -> AccountData:
    account_id = text(item, "id", "account")
    where = f"account {account_id}"
    currency = text(item, "currency", where)
    balances = field(item, "balances", where)
    positions = field(item, "positions", where)
    if not isinstance(positions, list):
        raise BrokerageError(f"{where}: 'positions' is not a list")
    return AccountData(
        handle=account_id,
        provider_account_id=account_id,
        name=text(item, "name", where),
        type=text(item, "type", where),
        currency=currency,
        number_masked=mask_number(text(item, "number", where)),
        cash=decimal(balances, "cash", where),
        market_value=decimal(balances, "market_value", where),
        total=decimal(balances, "total", where),
        positions=tuple(
            PositionData(
                symbol=text(position, "symbol", f"{where} position"),
                quantity=decimal(position, "quantity", f"{where} position"),
                cost_basis=decimal(position, "average_cost", f"{where} position")
                * decimal(position, "quantity", f"{where} position"),
                market_value=decimal(position, "market_value", f"{where} position"),
                currency=currency,
            )
            for position in positions
        ),
    )


def _transaction(item: Any, currency: str) -> TransactionData:
    transaction_id = text(item, "id", "transaction")
    where = f"transaction {transaction_id}"
    kind = text(item, "type", where)
    try:
        transaction_type = TransactionType(kind)
    except ValueError:
        raise BrokerageError(f"{where}: unknown transaction type {kind[:40]!r}") from None
    symbol = item.get("symbol")
    description = item.get("description")
    return TransactionData(
        provider_transaction_id=transaction_id,
        posted_at=timestamp(item, "posted_at", where),
        type=transaction_type,
        amount=decimal(item, "amount", where),
        currency=currency,
        symbol=str(symbol)[:64] if symbol else None,
        description=str(description)[:500] if description else None,
    )
