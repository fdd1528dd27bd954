"""The ceiling ``throughput.py`` measures Dashtam against: the same stack with nothing on top.

FastAPI, one asyncpg pool, the same HS256 access-token check, and one query per request
that returns the rows Dashtam returns, serialised to the same JSON bytes (``throughput.py``
compares the bodies before it measures). No ORM, no session, no revocation check.

Each listing is one entry of ``LISTINGS``: the path and its SQL, whose columns are named
and ordered as the JSON keys of an item, followed by the listing's ``count(*) OVER ()``.
``$1`` is the caller's user id (the token's ``sub``), ``$2`` the page size, ``$3`` the
offset, ``$4`` the path's one parameter if it has one (``{account_id}``). A column named
``balance__cash`` is the key ``cash`` of the item's object ``balance``, which is ``null``
when all its columns are. Money is formatted in SQL as Dashtam writes it (``_MONEY``).
Served as ``uvicorn bare_app:app --app-dir benchmarks``, configured by
``BARE_DATABASE_URL``, ``BARE_SECRET_KEY`` and ``BARE_POOL_SIZE``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import jwt
from fastapi import FastAPI, Request, Response


def _money(column: str) -> str:
    """``column`` as ``schemas.money.money_text`` writes it: no trailing zeros beyond cents."""
    return (
        f"CASE WHEN scale(trim_scale({column})) < 2 THEN round({column}, 2)::text"
        f" ELSE trim_scale({column})::text END"
    )


LISTINGS: dict[str, str] = {
    "/api/v1/providers": (
        "SELECT p.id, p.provider_key, p.alias, c.status, p.created_at, p.updated_at,"
        " count(*) OVER () FROM providers p JOIN provider_connections c ON c.provider_id = p.id"
        " WHERE p.user_id = $1 ORDER BY p.created_at, p.id LIMIT $2 OFFSET $3"
    ),
    "/api/v1/accounts": (
        "SELECT a.id, a.provider_id, a.name, a.type, a.currency, a.number_masked,"
        f" {_money('b.cash')} AS balance__cash, {_money('b.market_value')} AS"
        f" balance__market_value, {_money('b.total')} AS balance__total,"
        " b.currency AS balance__currency, b.as_of AS balance__as_of, count(*) OVER ()"
        " FROM accounts a JOIN providers p ON p.id = a.provider_id"
        " LEFT JOIN LATERAL (SELECT * FROM balance_snapshots s WHERE s.account_id = a.id"
        " ORDER BY s.as_of DESC, s.id DESC LIMIT 1) b ON true"
        " WHERE p.user_id = $1 ORDER BY a.created_at, a.id LIMIT $2 OFFSET $3"
    ),
    "/api/v1/accounts/{account_id}/transactions": (
        "SELECT t.id, t.provider_transaction_id, t.posted_at, t.type,"
        f" {_money('t.amount')} AS amount, t.currency, t.symbol, t.description, count(*) OVER ()"
        " FROM transactions t JOIN accounts a ON a.id = t.account_id"
        " JOIN providers p ON p.id = a.provider_id"
        " WHERE p.user_id = $1 AND t.account_id = $4"
        " ORDER BY t.posted_at DESC, t.id DESC LIMIT $2 OFFSET $3"
    ),
}

_AUDIENCE = "dashtam:access"
_UNAUTHORIZED = Response(b'{"title":"Unauthorized"}', 401, media_type="application/json")


def _json_value(value: Any) -> Any:
    # As pydantic writes them: UTC as "Z", UUIDs and money (Decimal) as strings.
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _item(keys: list[str], row: asyncpg.Record) -> dict[str, Any]:
    item: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in zip(keys, row, strict=False):
        outer, _, inner = key.partition("__")
        if inner:
            item.setdefault(outer, None)
            nested.setdefault(outer, {})[inner] = value
        else:
            item[key] = value
    for outer, values in nested.items():
        item[outer] = values if any(v is not None for v in values.values()) else None
    return item


def _caller(request: Request, secret: str) -> uuid.UUID | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=_AUDIENCE)
        return uuid.UUID(str(claims["sub"]))
    except (jwt.InvalidTokenError, KeyError, ValueError):
        return None


def _listing(sql: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        user_id = _caller(request, app.state.secret)
        if user_id is None:
            return _UNAUTHORIZED
        page = int(request.query_params.get("page", 1))
        size = int(request.query_params.get("size", 20))
        pool: asyncpg.Pool = app.state.pool
        rows = await pool.fetch(
            sql, user_id, size, (page - 1) * size, *request.path_params.values()
        )
        keys = list(rows[0].keys())[:-1] if rows else []  # the last column is the total
        items = [_item(keys, row) for row in rows]
        body = {"items": items, "total": rows[0][-1] if rows else 0, "page": page, "size": size}
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=_json_value)
        return Response(content.encode(), media_type="application/json")

    return serve


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ["BARE_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    size = int(os.environ.get("BARE_POOL_SIZE", "16"))
    app.state.secret = os.environ["BARE_SECRET_KEY"]
    async with asyncpg.create_pool(url, min_size=size, max_size=size) as pool:
        app.state.pool = pool
        yield


app = FastAPI(lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
for path, sql in LISTINGS.items():
    app.add_api_route(path, _listing(sql), methods=["GET"])


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
