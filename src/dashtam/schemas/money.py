"""Money and quantities in JSON: decimal strings (``"1234.50"``), never floats."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import PlainSerializer


def money_text(value: Decimal) -> str:
    """At least cents, more only where the amount has them: ``1234.5000`` -> ``"1234.50"``."""
    text = format(value.normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def quantity_text(value: Decimal) -> str:
    """No trailing zeros, no exponent: ``10.00000000`` -> ``"10"``, ``0.5`` -> ``"0.5"``."""
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


Money = Annotated[Decimal, PlainSerializer(money_text, return_type=str)]
Quantity = Annotated[Decimal, PlainSerializer(quantity_text, return_type=str)]
