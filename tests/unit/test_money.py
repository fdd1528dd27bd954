"""Money and quantities leave Dashtam as decimal strings, exactly."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dashtam.schemas.money import money_text, quantity_text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("1234.5000", "1234.50"),
        ("0", "0.00"),
        ("-12.3456", "-12.3456"),
        ("100", "100.00"),
        ("1E+3", "1000.00"),
        ("0.1000", "0.10"),
    ],
)
def test_money_keeps_cents_and_every_real_digit(value: str, text: str) -> None:
    assert money_text(Decimal(value)) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [("10.00000000", "10"), ("0.50000000", "0.5"), ("1E+2", "100"), ("0", "0")],
)
def test_quantities_have_no_trailing_zeros_or_exponent(value: str, text: str) -> None:
    assert quantity_text(Decimal(value)) == text
