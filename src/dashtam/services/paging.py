"""One page of a listing and the listing's total, in one query.

``count(*) OVER ()`` is computed before ``LIMIT`` / ``OFFSET``, so every row of the page
carries the total: no separate count query. Only a page past the end, which has no row to
carry it, costs a count of its own.

Build a listing's statement once, at import (``paged``), with its inputs as bound
parameters: a statement built per request is built, and keyed for SQLAlchemy's compiled
cache, again on every call, which costs more CPU than running it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

# A select of any columns or entities.
AnySelect = Select[*tuple[Any, ...]]


def paged(statement: AnySelect) -> AnySelect:
    """``statement`` (ordered) with its total as each row's last column and the page's bounds
    as parameters, for ``fetch_page``."""
    return (
        statement.add_columns(func.count().over())
        .offset(bindparam("page_offset"))
        .limit(bindparam("page_limit"))
    )


async def fetch_page(
    *,
    on: AsyncSession | AsyncConnection,
    statement: AnySelect,
    params: dict[str, Any],
    page: int,
    size: int,
) -> tuple[Sequence[Row[Any]], int]:
    """The ``page``-th ``size`` rows of a ``paged`` statement, and the total.

    ``on`` is the session for a statement of ORM entities, its connection for one of columns
    (Core: no ORM result processing).
    """
    bounds = {"page_offset": (page - 1) * size, "page_limit": size}
    rows = (await on.execute(statement, {**params, **bounds})).all()
    if rows:
        return rows, int(rows[0][-1])
    if page == 1:
        return [], 0
    whole = statement.order_by(None).offset(None).limit(None).subquery()
    total = await on.scalar(select(func.count()).select_from(whole), params)
    return [], int(total or 0)
