"""One page of a listing and the listing's total, in one query.

``count(*) OVER ()`` is computed before ``LIMIT`` / ``OFFSET``, so every row of the page
carries the total: no separate count query. Only a page past the end, which has no row to
carry it, costs a count of its own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession


async def fetch_page(
    *, session: AsyncSession, statement: Select[Any], page: int, size: int
) -> tuple[list[Any], int]:
    """The ``page``-th ``size`` rows of ``statement`` (ordered by the caller) and the total.

    ``statement`` selects one entity (or column); the list holds it.
    """
    counted = statement.add_columns(func.count().over())
    rows = (await session.execute(counted.offset((page - 1) * size).limit(size))).all()
    if rows:
        return [row[0] for row in rows], int(rows[0][1])
    if page == 1:
        return [], 0
    total = await session.scalar(
        select(func.count()).select_from(statement.order_by(None).subquery())
    )
    return [], int(total or 0)
