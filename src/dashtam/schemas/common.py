"""Shared field types and the page envelope."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StringConstraints


def _nfc(value: str) -> str:
    # One spelling per name: "é" typed precomposed or as e + accent is the same alias.
    return unicodedata.normalize("NFC", value)


def _printable(value: str) -> str:
    # PostgreSQL text cannot hold NUL; other control characters have no place in names either,
    # lone surrogates cannot be stored as UTF-8, and bidirectional overrides disguise names.
    if any(_unprintable(ch) for ch in value):
        raise ValueError("must not contain control, surrogate or bidirectional-override characters")
    return value


def _unprintable(ch: str) -> bool:
    code = ord(ch)
    return (
        code < 32
        or 127 <= code <= 159
        or 0xD800 <= code <= 0xDFFF
        or 0x202A <= code <= 0x202E
        or 0x2066 <= code <= 0x2069
    )


PlainText = Annotated[str, AfterValidator(_printable)]
Alias = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_printable),
    AfterValidator(_nfc),
]
