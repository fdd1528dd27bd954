"""Page parameters shared by listings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

PageParam = Annotated[int, Query(ge=1, le=1_000_000)]
SizeParam = Annotated[int, Query(ge=1, le=100)]
