"""What Dashtam reads from a brokerage, whoever the brokerage is.

Each provider type maps its own API onto these shapes (``sandbox_api.py``, ``schwab_api.py``);
the sync service stores them. A mapping that meets data it cannot trust (a missing field, an
unknown transaction type) raises ``BrokerageError`` instead of guessing, so nothing half-read
is stored. Errors::

    BrokerageError            the provider's data could not be read (``reason`` says why)
    └── BrokerageAuthError    the provider refused the access token (401): refresh, retry
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Protocol

import httpx


class TransactionType(StrEnum):
    BUY = "buy"
    SELL = "sell"
    DIVIDEND = "dividend"
    INTEREST = "interest"
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    FEE = "fee"
    TRANSFER = "transfer"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class PositionData:
    symbol: str
    quantity: Decimal
    cost_basis: Decimal | None
    market_value: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class AccountData:
    # handle: what the provider's API wants in its URLs for this account (Schwab's hashValue)
    handle: str
    provider_account_id: str
    name: str
    type: str
    currency: str
    number_masked: str
    cash: Decimal
    market_value: Decimal
    total: Decimal
    positions: tuple[PositionData, ...]


@dataclass(frozen=True, slots=True)
class UnreadableAccount:
    """An account the provider listed but whose data cannot be trusted; the others still can."""

    reason: str


@dataclass(frozen=True, slots=True)
class TransactionData:
    provider_transaction_id: str
    posted_at: datetime
    type: TransactionType
    amount: Decimal
    currency: str
    symbol: str | None
    description: str | None


class BrokerageError(Exception):
    """The provider's accounts could not be read; ``reason`` is safe to show and store."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:500]


class BrokerageAuthError(BrokerageError):
    """The provider refused the access token."""


class BrokerageClient(Protocol):
    async def accounts(self) -> list[AccountData | UnreadableAccount]: ...

    async def transactions(
        self, account: AccountData, *, since: datetime, until: datetime
    ) -> list[TransactionData]: ...


def read_each(
    items: list[Any], read: Callable[[Any], AccountData]
) -> list[AccountData | UnreadableAccount]:
    """``read`` every account; one that fails is kept as unreadable, not fatal to the rest."""
    accounts: list[AccountData | UnreadableAccount] = []
    for item in items:
        try:
            accounts.append(read(item))
        except BrokerageError as exc:
            accounts.append(UnreadableAccount(exc.reason))
    return accounts


def mask_number(number: str) -> str:
    """``****1234``: enough to recognise an account, not enough to use it."""
    return "****" + number[-4:]


def field(data: Any, name: str, where: str) -> Any:
    """``data[name]``, or a ``BrokerageError`` naming the missing field and where it was."""
    if not isinstance(data, dict) or data.get(name) is None:
        raise BrokerageError(f"{where}: field {name!r} is missing")
    return data[name]


def text(data: Any, name: str, where: str) -> str:
    value = field(data, name, where)
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise BrokerageError(f"{where}: field {name!r} is not a text")
    return str(value)


def decimal(data: Any, name: str, where: str) -> Decimal:
    value = field(data, name, where)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BrokerageError(f"{where}: field {name!r} is not a number")
    try:
        # Through str: a JSON float 0.1 is the decimal 0.1, not its binary approximation.
        result = Decimal(str(value))
    except InvalidOperation:
        raise BrokerageError(f"{where}: field {name!r} is not a number") from None
    if not result.is_finite():
        raise BrokerageError(f"{where}: field {name!r} is not a finite number")
    return result


def timestamp(data: Any, name: str, where: str) -> datetime:
    value = text(data, name, where)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BrokerageError(f"{where}: field {name!r} is not a date-time") from None
    if parsed.tzinfo is None:
        raise BrokerageError(f"{where}: field {name!r} has no time zone")
    return parsed


async def get_json(
    http: httpx.AsyncClient, url: str, *, access_token: str, params: dict[str, str] | None = None
) -> Any:
    """GET a provider's JSON with the bearer token; its failures as ``BrokerageError``."""
    try:
        response = await http.get(
            url,
            params=params,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
    except httpx.HTTPError as exc:
        raise BrokerageError(f"the provider could not be reached ({type(exc).__name__})") from None
    if response.status_code == 401:
        raise BrokerageAuthError("the provider refused the access token (HTTP 401)")
    if response.status_code != 200:
        raise BrokerageError(f"the provider answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise BrokerageError("the provider's answer is not JSON") from None
