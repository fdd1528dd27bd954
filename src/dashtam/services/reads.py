"""Reads on behalf of an access token's holder, each in one round trip.

A read's statement carries the caller's authentication itself (``for_caller``): it returns
rows only while the token's login session is open. A read that finds rows is then one
statement, authentication included; only an empty answer asks who the caller is
(``Reader.verify``), so that an ended session gets its 401 rather than an empty page or a 404.
``Reader`` runs nothing but such statements for the rows it returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, exists
from sqlalchemy.ext.asyncio import AsyncConnection

from dashtam.core.security import AccessClaims
from dashtam.models import AuthSession
from dashtam.services.callers import Authenticated, caller_of
from dashtam.services.paging import AnySelect, fetch_page

# Never correlated, even to a statement reading auth_sessions itself (the sessions listing):
# PostgreSQL evaluates it once per statement, before reading any row.
_SESSION_OPEN = (
    exists()
    .where(
        AuthSession.id == bindparam("caller_session_id"),
        AuthSession.user_id == bindparam("user_id"),
        AuthSession.revoked_at.is_(None),
    )
    .correlate(None)
)


@dataclass(frozen=True, slots=True)
class CallerSelect:
    """A select that returns rows only while the caller's session is open (``for_caller``)."""

    statement: AnySelect


def for_caller(statement: AnySelect) -> CallerSelect:
    """``statement`` (a ``paging.paged`` one too) guarded by the caller's open session; its
    ``user_id`` parameter, if it has one, is the caller's. Build it once, at import."""
    return CallerSelect(statement.where(_SESSION_OPEN))


@dataclass(frozen=True, slots=True)
class CallerId:
    """Whose data a read is (a ``context.UserRef``): the user the access token names."""

    id: uuid.UUID


class Reader:
    """A connection whose statements autocommit (``db.reading``), reading for the holder of
    valid access token claims whose session has not been looked at yet."""

    __slots__ = ("_caller", "claims", "connection", "user")

    def __init__(self, connection: AsyncConnection, claims: AccessClaims) -> None:
        self.connection = connection
        self.claims = claims
        self.user = CallerId(claims.user_id)
        self._caller = {"user_id": claims.user_id, "caller_session_id": claims.session_id}

    async def rows(
        self, select: CallerSelect, params: dict[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """The statement's rows; none only after ``verify`` has confirmed the caller."""
        found = (await self.connection.execute(select.statement, self._with_caller(params))).all()
        if not found:
            await self.verify()
        return found

    async def first(
        self, select: CallerSelect, params: dict[str, Any] | None = None
    ) -> Row[Any] | None:
        found = await self.rows(select, params)
        return found[0] if found else None

    async def page(
        self, select: CallerSelect, params: dict[str, Any] | None, *, page: int, size: int
    ) -> tuple[Sequence[Row[Any]], int]:
        """``paging.fetch_page`` of a guarded paged statement; an empty page after ``verify``."""
        found, total = await fetch_page(
            on=self.connection,
            statement=select.statement,
            params=self._with_caller(params),
            page=page,
            size=size,
        )
        if not found:
            await self.verify()
        return found, total

    async def verify(self) -> Authenticated:
        """The caller's user and session; 401 when the session has ended or the user is gone."""
        return await caller_of(self.connection, self.claims)

    def _with_caller(self, params: dict[str, Any] | None) -> dict[str, Any]:
        return {**params, **self._caller} if params else self._caller


def as_dicts(rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """Rows as dicts, to validate public schemas from: pydantic reads a dict about three times
    faster than a ``Row``'s attributes (``from_attributes``). A paged statement's trailing
    total is one more key, which the schemas ignore."""
    if not rows:
        return []
    names = rows[0]._fields
    return [dict(zip(names, row, strict=True)) for row in rows]
