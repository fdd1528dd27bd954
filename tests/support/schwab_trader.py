"""Schwab's Trader API as its documentation shows it, for ``httpx.MockTransport``.

The bodies below use Schwab's documented field names and shapes (``securitiesAccount``,
``currentBalances``, ``positions[].instrument``, ``activityId``, ``transferItems``, ...), with
the fields Dashtam does not read left in, as Schwab sends them.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

API = "https://api.schwabapi.com/trader/v1"


def securities_account(
    number: str, *, cash: float, liquidation: float, positions: list[dict[str, Any]]
) -> dict[str, Any]:
    long_market_value = round(sum(p["marketValue"] for p in positions), 2)
    return {
        "securitiesAccount": {
            "type": "MARGIN",
            "accountNumber": number,
            "roundTrips": 0,
            "isDayTrader": False,
            "isClosingOnlyRestricted": False,
            "pfcbFlag": False,
            "positions": positions,
            "initialBalances": {"accruedInterest": 0, "cashBalance": cash, "isInCall": False},
            "currentBalances": {
                "accruedInterest": 0,
                "cashBalance": cash,
                "cashReceipts": 0,
                "longOptionMarketValue": 0,
                "liquidationValue": liquidation,
                "longMarketValue": long_market_value,
                "moneyMarketFund": 0,
                "savings": 0,
                "shortMarketValue": 0,
                "pendingDeposits": 0,
                "mutualFundValue": 0,
                "bondValue": 0,
                "shortOptionMarketValue": 0,
                "buyingPower": cash * 2,
            },
            "projectedBalances": {"availableFunds": cash, "buyingPower": cash * 2},
        },
        "aggregatedBalance": {
            "currentLiquidationValue": liquidation,
            "liquidationValue": liquidation,
        },
    }


def position(
    symbol: str, *, quantity: float, average_price: float, market_value: float
) -> dict[str, Any]:
    return {
        "shortQuantity": 0,
        "averagePrice": average_price,
        "currentDayProfitLoss": 12.5,
        "currentDayProfitLossPercentage": 0.42,
        "longQuantity": quantity,
        "settledLongQuantity": quantity,
        "settledShortQuantity": 0,
        "instrument": {
            "assetType": "EQUITY",
            "cusip": "037833100",
            "symbol": symbol,
            "netChange": 1.2,
        },
        "marketValue": market_value,
        "maintenanceRequirement": market_value * 0.3,
        "averageLongPrice": average_price,
        "longOpenProfitLoss": market_value - average_price * quantity,
        "previousSessionLongQuantity": quantity,
    }


def _cash_item() -> dict[str, Any]:
    return {
        "instrument": {
            "assetType": "CURRENCY",
            "status": "ACTIVE",
            "symbol": "CURRENCY_USD",
            "description": "USD currency",
            "instrumentId": 1,
            "closingPrice": 0,
        },
        "amount": 0,
        "cost": 0,
        "feeType": "COMMISSION",
    }


def activity(
    activity_id: int,
    time: str,
    kind: str,
    net_amount: float,
    *,
    symbol: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    items = [_cash_item()]
    if symbol is not None:
        items.append(
            {
                "instrument": {
                    "assetType": "EQUITY",
                    "status": "ACTIVE",
                    "symbol": symbol,
                    "instrumentId": 1234,
                    "closingPrice": 171.48,
                    "type": "COMMON_STOCK",
                },
                "amount": 20,
                "cost": net_amount,
                "price": 150.25,
                "positionEffect": "OPENING",
            }
        )
    body: dict[str, Any] = {
        "activityId": activity_id,
        "time": time,
        "accountNumber": "12345678",
        "type": kind,
        "status": "VALID",
        "subAccount": "CASH",
        "tradeDate": time,
        "positionId": 2650262287,
        "orderId": 1000118245,
        "netAmount": net_amount,
        "transferItems": items,
    }
    if description is not None:
        body["description"] = description
    return body


def ago(days: float) -> str:
    """A time ``days`` before now, as Schwab writes times (``2024-03-28T21:10:42+0000``)."""
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class TraderApi:
    """Two accounts; their transactions; what each request asked for; faults on cue."""

    def __init__(self) -> None:
        self.numbers = [
            {"accountNumber": "12345678", "hashValue": "E5B1A2C3D4"},
            {"accountNumber": "87654321", "hashValue": "F6A7B8C9D0"},
        ]
        self.accounts = [
            securities_account(
                "12345678",
                cash=2500.5,
                liquidation=6310.9,
                positions=[
                    position("AAPL", quantity=20, average_price=150.25, market_value=3810.4)
                ],
            ),
            securities_account(
                "87654321",
                cash=100.0,
                liquidation=1100.0,
                positions=[position("VTI", quantity=4, average_price=240.0, market_value=1000.0)],
            ),
        ]
        self.activities: dict[str, list[dict[str, Any]]] = {
            "E5B1A2C3D4": [
                activity(95512265692, ago(9), "TRADE", -3005.0, symbol="AAPL"),
                activity(
                    95512265693,
                    ago(7),
                    "DIVIDEND_OR_INTEREST",
                    4.8,
                    symbol="AAPL",
                    description="ORDINARY DIVIDEND",
                ),
                activity(95512265694, ago(6), "ACH_RECEIPT", 1000.0),
            ],
            "F6A7B8C9D0": [
                activity(95512265700, ago(5), "TRADE", -960.0, symbol="VTI"),
            ],
        }
        self.requests: list[httpx.Request] = []
        self.fail: dict[str, httpx.Response] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/trader/v1")
        if path in self.fail:
            return self.fail[path]
        if path == "/accounts/accountNumbers":
            return httpx.Response(200, json=self.numbers)
        if path == "/accounts":
            assert request.url.params["fields"] == "positions"
            return httpx.Response(200, json=copy.deepcopy(self.accounts))
        hash_value = path.removeprefix("/accounts/").removesuffix("/transactions")
        if hash_value not in self.activities:
            return httpx.Response(
                400, json={"message": "Invalid account number", "errors": ["bad hashValue"]}
            )
        start, end = (_parse(request.url.params[k]) for k in ("startDate", "endDate"))
        assert (end - start).days <= 365, "Schwab refuses windows over a year"
        assert request.url.params["types"]
        found = [a for a in self.activities[hash_value] if start <= _parse(a["time"]) <= end]
        return httpx.Response(200, json=copy.deepcopy(found))
