"""Schwab's documented shapes onto Dashtam's, one rule at a time (no database needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from dashtam.providers.brokerage import (
    AccountData,
    BrokerageError,
    TransactionType,
    UnreadableAccount,
    decimal,
    text,
    timestamp,
)
from dashtam.providers.schwab_api import MAX_WINDOW, SchwabBrokerage, schwab_time, windows
from tests.support.schwab_trader import API, TraderApi, activity, ago

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _reader(api: TraderApi) -> SchwabBrokerage:
    http = httpx.AsyncClient(transport=httpx.MockTransport(api.handle))
    return SchwabBrokerage(http, api_url=API, access_token="token")


async def _accounts(api: TraderApi) -> list[AccountData | UnreadableAccount]:
    return await _reader(api).accounts()


async def _types(*activities: dict[str, Any]) -> list[TransactionType]:
    api = TraderApi()
    api.activities["E5B1A2C3D4"] = list(activities)
    [account, _] = await _accounts(api)
    assert isinstance(account, AccountData)
    found = await _reader(api).transactions(
        account, since=NOW - timedelta(days=30), until=datetime.now(UTC)
    )
    return [t.type for t in found]


def test_windows_are_at_most_a_year_and_meet_end_to_start() -> None:
    assert windows(NOW, NOW) == []
    assert windows(NOW - timedelta(days=10), NOW) == [(NOW - timedelta(days=10), NOW)]
    spans = windows(NOW - timedelta(days=800), NOW)
    assert [end - start for start, end in spans] == [MAX_WINDOW, MAX_WINDOW, timedelta(days=70)]
    assert schwab_time(NOW) == "2026-12-07T12:00:00.000Z"


async def test_activity_types_map_onto_dashtams() -> None:
    assert await _types(
        activity(1, ago(1), "TRADE", -10.0, symbol="AAPL"),
        activity(2, ago(1), "TRADE", 10.0, symbol="AAPL"),
        activity(3, ago(1), "DIVIDEND_OR_INTEREST", 1.0, description="FREE BALANCE INTEREST"),
        activity(4, ago(1), "ELECTRONIC_FUND", 50.0),
        activity(5, ago(1), "ELECTRONIC_FUND", -50.0),
        activity(6, ago(1), "CASH_DISBURSEMENT", -5.0),
        activity(7, ago(1), "JOURNAL", 3.0),
        activity(8, ago(1), "MEMORANDUM", 0.0),
    ) == [
        TransactionType.BUY,
        TransactionType.SELL,
        TransactionType.INTEREST,
        TransactionType.DEPOSIT,
        TransactionType.WITHDRAWAL,
        TransactionType.WITHDRAWAL,
        TransactionType.TRANSFER,
        TransactionType.OTHER,
    ]


async def test_short_positions_and_missing_optional_fields() -> None:
    api = TraderApi()
    account = api.accounts[0]["securitiesAccount"]
    account["positions"][0]["shortQuantity"] = 5
    del account["positions"][0]["averagePrice"]
    del account["currentBalances"]["longMarketValue"]
    api.accounts[1]["securitiesAccount"].pop("positions")  # Schwab omits it when empty
    first, second = await _accounts(api)
    assert isinstance(first, AccountData)
    assert first.positions[0].quantity == Decimal(15)
    assert first.positions[0].cost_basis is None
    assert first.market_value == Decimal("6310.9") - Decimal("2500.5")
    assert isinstance(second, AccountData)
    assert second.positions == ()


async def test_an_unlisted_or_malformed_account_is_unreadable_alone() -> None:
    api = TraderApi()
    api.numbers.pop()  # no hashValue for the second account
    first, second = await _accounts(api)
    assert isinstance(first, AccountData)
    assert second == UnreadableAccount("account ****4321: no hashValue was listed")
    api = TraderApi()
    api.accounts[0]["securitiesAccount"]["positions"] = {"AAPL": 1}
    assert (await _accounts(api))[0] == UnreadableAccount(
        "account ****5678: 'positions' is not a list"
    )


async def test_answers_of_the_wrong_shape_are_refused() -> None:
    api = TraderApi()
    first = (await _accounts(api))[0]
    assert isinstance(first, AccountData)
    api.fail["/accounts/E5B1A2C3D4/transactions"] = httpx.Response(200, json={})
    with pytest.raises(BrokerageError, match="transactions: the answer is not a list"):
        await _reader(api).transactions(first, since=NOW - timedelta(days=1), until=NOW)
    api.fail["/accounts/accountNumbers"] = httpx.Response(200, json={"x": 1})
    with pytest.raises(BrokerageError, match="accountNumbers: the answer is not a list"):
        await _accounts(api)


async def test_an_unreachable_provider_is_a_brokerage_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    reader = SchwabBrokerage(
        httpx.AsyncClient(transport=httpx.MockTransport(refuse)), api_url=API, access_token="t"
    )
    with pytest.raises(BrokerageError, match=r"could not be reached \(ConnectError\)"):
        await reader.accounts()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "is not a number"),
        ("abc", "is not a number"),
        ("NaN", "is not a finite number"),
        ([], "is not a number"),
    ],
)
def test_numbers_must_be_finite_decimals(value: Any, message: str) -> None:
    with pytest.raises(BrokerageError, match=message):
        decimal({"n": value}, "n", "here")


def test_json_floats_become_the_decimals_they_print_as() -> None:
    assert decimal({"n": 0.1}, "n", "here") == Decimal("0.1")


def test_texts_and_times_are_checked() -> None:
    with pytest.raises(BrokerageError, match="'t' is not a text"):
        text({"t": {"a": 1}}, "t", "here")
    with pytest.raises(BrokerageError, match="'t' is missing"):
        text(["not", "an", "object"], "t", "here")
    with pytest.raises(BrokerageError, match="is not a date-time"):
        timestamp({"t": "yesterday"}, "t", "here")
    with pytest.raises(BrokerageError, match="has no time zone"):
        timestamp({"t": "2026-01-01T00:00:00"}, "t", "here")
    assert timestamp({"t": "2026-01-01T00:00:00+0000"}, "t", "here") == datetime(
        2026, 1, 1, tzinfo=UTC
    )
