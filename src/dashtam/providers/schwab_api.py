"""Schwab's Trader API (``/trader/v1``) read into Dashtam's shapes.

Uses the documented endpoints and field names:

- ``GET /accounts/accountNumbers``: ``[{accountNumber, hashValue}]``; every other call names
  an account by its ``hashValue``, never by its number.
- ``GET /accounts?fields=positions``: ``[{securitiesAccount: {accountNumber, type,
  currentBalances: {cashBalance, liquidationValue, longMarketValue, ...}, positions:
  [{instrument: {symbol, assetType}, longQuantity, shortQuantity, averagePrice,
  marketValue}]}}]``.
- ``GET /accounts/{hashValue}/transactions?startDate=&endDate=&types=``: ``[{activityId, time,
  type, netAmount, description, transferItems: [{instrument: {symbol, assetType}, amount,
  price, cost, feeType}]}]``; one request covers at most a year, so longer spans are asked
  for window by window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
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

#: The longest span one transactions request may cover.
MAX_WINDOW = timedelta(days=365)
SCHWAB_TYPES = (
    "TRADE",
    "RECEIVE_AND_DELIVER",
    "DIVIDEND_OR_INTEREST",
    "ACH_RECEIPT",
    "ACH_DISBURSEMENT",
    "CASH_RECEIPT",
    "CASH_DISBURSEMENT",
    "ELECTRONIC_FUND",
    "WIRE_OUT",
    "WIRE_IN",
    "JOURNAL",
    "MEMORANDUM",
    "MARGIN_CALL",
    "MONEY_MARKET",
    "SMA_ADJUSTMENT",
)
_INFLOWS = frozenset({"ACH_RECEIPT", "CASH_RECEIPT", "WIRE_IN"})
_OUTFLOWS = frozenset({"ACH_DISBURSEMENT", "CASH_DISBURSEMENT", "WIRE_OUT"})
_TRANSFERS = frozenset({"JOURNAL", "RECEIVE_AND_DELIVER"})
_OTHER = frozenset({"MEMORANDUM", "MARGIN_CALL", "MONEY_MARKET", "SMA_ADJUSTMENT"})
_CURRENCY = "USD"  # the Trader API reports US accounts in dollars


def schwab_time(moment: datetime) -> str:
    """Schwab's ``yyyy-MM-dd'T'HH:mm:ss.SSSZ``, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def windows(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """``[since, until]`` cut into spans of at most ``MAX_WINDOW``, oldest first."""
    spans = []
    start = since
    while start < until:
        end = min(start + MAX_WINDOW, until)
        spans.append((start, end))
        start = end
    return spans


class SchwabBrokerage:
    def __init__(self, http: httpx.AsyncClient, *, api_url: str, access_token: str) -> None:
        self._http = http
        self._api = api_url.rstrip("/")
        self._token = access_token

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return await get_json(
            self._http, f"{self._api}{path}", access_token=self._token, params=params
        )

    async def accounts(self) -> list[AccountData | UnreadableAccount]:
        numbers = await self._get("/accounts/accountNumbers")
        if not isinstance(numbers, list):
            raise BrokerageError("accountNumbers: the answer is not a list")
        hashes = {
            text(item, "accountNumber", "accountNumbers"): text(item, "hashValue", "accountNumbers")
            for item in numbers
        }
        body = await self._get("/accounts", {"fields": "positions"})
        if not isinstance(body, list):
            raise BrokerageError("accounts: the answer is not a list")

        def read(item: Any) -> AccountData:
            account = field(item, "securitiesAccount", "accounts")
            number = text(account, "accountNumber", "securitiesAccount")
            if number not in hashes:
                raise BrokerageError(f"account {mask_number(number)}: no hashValue was listed")
            return _account(account, number, hashes[number])

        return read_each(body, read)

    async def transactions(
        self, account: AccountData, *, since: datetime, until: datetime
    ) -> list[TransactionData]:
        found: dict[str, TransactionData] = {}
        for start, end in windows(since, until):
            body = await self._get(
                f"/accounts/{account.handle}/transactions",
                {
                    "startDate": schwab_time(start),
                    "endDate": schwab_time(end),
                    "types": ",".join(SCHWAB_TYPES),
                },
            )
            if not isinstance(body, list):
                raise BrokerageError("transactions: the answer is not a list")
            for item in body:
                transaction = _transaction(item)
                # Windows meet at their edges: an activity there is listed twice.
                found[transaction.provider_transaction_id] = transaction
        return list(found.values())


def _account(account: Any, number: str, hash_value: str) -> AccountData:
    where = f"account {mask_number(number)}"
    kind = text(account, "type", where)
    balances = field(account, "currentBalances", where)
    cash = decimal(balances, "cashBalance", where)
    total = decimal(balances, "liquidationValue", where)
    positions = account.get("positions") or []
    if not isinstance(positions, list):
        raise BrokerageError(f"{where}: 'positions' is not a list")
    return AccountData(
        handle=hash_value,
        provider_account_id=number,
        name=f"Schwab {kind.title()} {mask_number(number)}",
        type=kind.lower(),
        currency=_CURRENCY,
        number_masked=mask_number(number),
        cash=cash,
        market_value=decimal(balances, "longMarketValue", where)
        if balances.get("longMarketValue") is not None
        else total - cash,
        total=total,
        positions=tuple(_position(position, where) for position in positions),
    )


def _position(position: Any, where: str) -> PositionData:
    where = f"{where} position"
    instrument = field(position, "instrument", where)
    symbol = text(instrument, "symbol", where)
    long_quantity = decimal(position, "longQuantity", f"{where} {symbol}")
    short_quantity = (
        decimal(position, "shortQuantity", where) if position.get("shortQuantity") else Decimal(0)
    )
    quantity = long_quantity - short_quantity
    average_price = position.get("averagePrice")
    return PositionData(
        symbol=symbol,
        quantity=quantity,
        cost_basis=decimal(position, "averagePrice", where) * quantity
        if average_price is not None
        else None,
        market_value=decimal(position, "marketValue", f"{where} {symbol}"),
        currency=_CURRENCY,
    )


def _transaction(item: Any) -> TransactionData:
    activity_id = text(item, "activityId", "transaction")
    where = f"transaction {activity_id}"
    kind = text(item, "type", where)
    amount = decimal(item, "netAmount", where)
    symbol = _symbol(item.get("transferItems"))
    description = item.get("description")
    return TransactionData(
        provider_transaction_id=activity_id,
        posted_at=timestamp(item, "time", where),
        type=_type(kind, amount, description, where),
        amount=amount,
        currency=_CURRENCY,
        symbol=symbol,
        description=str(description)[:500] if description else None,
    )


def _type(kind: str, amount: Decimal, description: Any, where: str) -> TransactionType:
    if kind == "TRADE":
        return TransactionType.BUY if amount < 0 else TransactionType.SELL
    if kind == "DIVIDEND_OR_INTEREST":
        is_interest = isinstance(description, str) and "INTEREST" in description.upper()
        return TransactionType.INTEREST if is_interest else TransactionType.DIVIDEND
    if kind in _INFLOWS or (kind == "ELECTRONIC_FUND" and amount >= 0):
        return TransactionType.DEPOSIT
    if kind in _OUTFLOWS or kind == "ELECTRONIC_FUND":
        return TransactionType.WITHDRAWAL
    if kind in _TRANSFERS:
        return TransactionType.TRANSFER
    if kind in _OTHER:
        return TransactionType.OTHER
    raise BrokerageError(f"{where}: unknown transaction type {kind[:40]!r}")


def _symbol(transfer_items: Any) -> str | None:
    """The security a transaction moved: its first transfer item that is not cash."""
    if not isinstance(transfer_items, list):
        return None
    for item in transfer_items:
        instrument = item.get("instrument") if isinstance(item, dict) else None
        if isinstance(instrument, dict) and instrument.get("assetType") != "CURRENCY":
            symbol = instrument.get("symbol")
            if isinstance(symbol, str) and symbol:
                return symbol[:64]
    return None
