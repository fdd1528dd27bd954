"""The sandbox's brokerage API: accounts, positions and history for a sandbox grant.

Requests carry an access token the sandbox issued (``Authorization: Bearer``); an expired or
revoked one is refused, as a real brokerage would. What a grant sees is deterministic (seeded
by the grant), except what a brokerage changes by itself: prices move a little from one call
to the next, and new transactions appear as time passes (one every ``EVENT_EVERY``).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core import security
from dashtam.core.clock import utcnow
from dashtam.core.errors import NotFoundError, UnauthorizedError
from dashtam.models import SandboxAccessToken, SandboxRefreshToken

EVENT_EVERY = timedelta(hours=6)
HISTORY = timedelta(days=60)
_CENT = Decimal("0.01")
# symbol: base price
_SECURITIES = {
    "AAPL": Decimal("190.00"),
    "MSFT": Decimal("410.00"),
    "VTI": Decimal("260.00"),
    "BND": Decimal("72.00"),
    "GOOGL": Decimal("165.00"),
    "AMZN": Decimal("185.00"),
}
_ACCOUNT_KINDS = (("Individual Brokerage", "brokerage"), ("Roth IRA", "ira"))


def _digest(*parts: object) -> int:
    joined = ":".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.sha256(joined).digest()[:8], "big")


def _money(value: Decimal) -> str:
    return str(value.quantize(_CENT, rounding=ROUND_HALF_UP))


async def authenticate(*, session: AsyncSession, authorization: str | None) -> uuid.UUID:
    """The grant (family) an access token belongs to; 401 if expired, revoked or unknown."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise UnauthorizedError("Send the sandbox access token: Authorization: Bearer <token>.")
    revoked = exists(
        select(SandboxRefreshToken.id).where(
            SandboxRefreshToken.family_id == SandboxAccessToken.family_id,
            SandboxRefreshToken.revoked_at.is_not(None),
        )
    )
    family_id = await session.scalar(
        select(SandboxAccessToken.family_id).where(
            SandboxAccessToken.token_hash == security.hash_opaque_token(presented.strip()),
            SandboxAccessToken.expires_at > utcnow(),
            ~revoked,
        )
    )
    if family_id is None:
        raise UnauthorizedError("The access token is invalid, expired or revoked.")
    return family_id


def _account_ids(family_id: uuid.UUID) -> list[str]:
    return [f"SBX{_digest(family_id, index) % 10**8:08d}" for index in range(len(_ACCOUNT_KINDS))]


def _price(symbol: str, now: datetime) -> Decimal:
    # About +-2%, moving with the clock: a brokerage's quotes move between two calls. Where the
    # curve turns, two calls 5 s apart can round to the same cent (1 in 200 to 1 in 1,900).
    drift = math.sin(now.timestamp() / 7 + _digest(symbol) % 100) / 50
    return (_SECURITIES[symbol] * Decimal(1 + drift)).quantize(_CENT, rounding=ROUND_HALF_UP)


def _holdings(account_id: str) -> list[tuple[str, Decimal]]:
    symbols = sorted(_SECURITIES)
    picked = [symbols[(_digest(account_id, n) + n) % len(symbols)] for n in range(3)]
    return [
        (symbol, Decimal(5 + _digest(account_id, symbol) % 95)) for symbol in sorted(set(picked))
    ]


def accounts(family_id: uuid.UUID) -> dict[str, Any]:
    """``GET /sandbox/api/accounts``: the grant's accounts with balances and positions."""
    now = utcnow()
    items = []
    for (name, kind), account_id in zip(_ACCOUNT_KINDS, _account_ids(family_id), strict=True):
        positions = []
        for symbol, quantity in _holdings(account_id):
            price = _price(symbol, now)
            average_cost = (_SECURITIES[symbol] * Decimal("0.9")).quantize(_CENT)
            positions.append(
                {
                    "symbol": symbol,
                    "quantity": str(quantity),
                    "average_cost": _money(average_cost),
                    "price": _money(price),
                    "market_value": _money(price * quantity),
                }
            )
        cash = Decimal(1000 + _digest(account_id, "cash") % 19_000)
        invested = sum((Decimal(p["market_value"]) for p in positions), Decimal(0))
        items.append(
            {
                "id": account_id,
                "name": name,
                "type": kind,
                "currency": "USD",
                "number": f"{_digest(account_id, 'number') % 10**10:010d}",
                "balances": {
                    "cash": _money(cash),
                    "market_value": _money(invested),
                    "total": _money(cash + invested),
                },
                "positions": positions,
            }
        )
    return {"accounts": items}


def _event(account_id: str, slot: int) -> dict[str, Any]:
    roll = _digest(account_id, slot, "kind") % 10
    symbols = [symbol for symbol, _ in _holdings(account_id)]
    symbol = symbols[_digest(account_id, slot, "symbol") % len(symbols)]
    size = Decimal(_digest(account_id, slot, "size") % 50_000) / 100 + 1
    posted_at = datetime.fromtimestamp(slot * EVENT_EVERY.total_seconds(), UTC)
    kind, amount, description, with_symbol = {
        0: ("buy", -size * 4, "Bought", True),
        1: ("buy", -size * 2, "Bought", True),
        2: ("buy", -size, "Bought", True),
        3: ("sell", size * 3, "Sold", True),
        4: ("sell", size, "Sold", True),
        5: ("dividend", size / 10, "Dividend", True),
        6: ("dividend", size / 20, "Dividend", True),
        7: ("deposit", size * 5, "Deposit from checking", False),
        8: ("interest", size / 100, "Interest on cash", False),
        9: ("fee", -(size / 200 + 1), "Account fee", False),
    }[roll]
    return {
        "id": f"{account_id}-{slot}",
        "posted_at": posted_at.isoformat(),
        "type": kind,
        "amount": _money(amount),
        "symbol": symbol if with_symbol else None,
        "description": f"{description} {symbol}" if with_symbol else description,
    }


def transactions(
    family_id: uuid.UUID, account_id: str, *, start: datetime | None, end: datetime | None
) -> dict[str, Any]:
    """``GET /sandbox/api/accounts/{id}/transactions``: newest first, within [start, end]."""
    if account_id not in _account_ids(family_id):
        raise NotFoundError("No such account for this grant.")
    now = utcnow()
    first = max(start or now - HISTORY, now - HISTORY)
    last = min(end or now, now)
    step = EVENT_EVERY.total_seconds()
    slots = range(math.ceil(first.timestamp() / step), math.floor(last.timestamp() / step) + 1)
    return {"transactions": [_event(account_id, slot) for slot in reversed(slots)]}
