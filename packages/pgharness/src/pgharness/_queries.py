"""Query counting: the SQL statements the code under test ran.

One process-wide SQLAlchemy listener (``before_cursor_execute`` on the ``Engine`` class, so
every engine and connection counts, the app's included) is attached only while some
recording is active: a test that asks for ``pg_queries`` or carries ``pg_max_queries``, or an
``at_most`` block. Tests that ask for neither never pay for it.

The harness's own transaction control (BEGIN / COMMIT / ROLLBACK / SAVEPOINT / RELEASE
SAVEPOINT / ROLLBACK TO SAVEPOINT, which the isolation's savepoint join mode emits for every
``commit()``) is not counted.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

__all__ = [
    "MAX_QUERIES_MARKER",
    "AtMost",
    "PgQueries",
    "Recording",
    "Statement",
    "enforce_max_queries",
    "format_statements",
    "max_queries",
    "recording_for",
    "validate_max_queries",
]

_TRANSACTION_CONTROL = re.compile(
    r"^\s*(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE
)
_PARAMETER_SHAPES = (
    (re.compile(r"'(?:[^']|'')*'"), "?"),  # string literals
    (re.compile(r"\$\d+(::[\w\[\]]+(\([\d, ]+\))?)?"), "?"),  # asyncpg $1::INTEGER
    (re.compile(r"%\(\w+\)s|%s|:\w+\b"), "?"),  # psycopg / named parameters
    (re.compile(r"\b\d+(\.\d+)?\b"), "?"),  # numbers
    (re.compile(r"\(\s*\?(\s*,\s*\?)*\s*\)"), "(?...)"),  # IN lists of any length
    (re.compile(r"\s+"), " "),
)
_MAX_SHOWN_CHARS = 400


@dataclass(frozen=True)
class Statement:
    sql: str
    parameters: Any

    @property
    def shape(self) -> str:
        """The statement with literals and parameters stripped: N+1 queries share a shape."""
        text = self.sql
        for pattern, replacement in _PARAMETER_SHAPES:
            text = pattern.sub(replacement, text)
        return text.strip()

    def render(self) -> str:
        text = " ".join(self.sql.split())
        if self.parameters not in (None, (), [], {}):
            text += f"  -- parameters: {self.parameters!r}"
        return _shorten(text)


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 3] + "..."


class Recording:
    """Statements recorded while active; many may be active at once (nested ``at_most``)."""

    def __init__(self) -> None:
        self.statements: list[Statement] = []

    def __enter__(self) -> Recording:
        _listener.add(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _listener.discard(self)


class _Listener:
    """The one class-level SQLAlchemy listener, attached while any recording is active."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recordings: list[Recording] = []

    def add(self, recording: Recording) -> None:
        from sqlalchemy import Engine, event

        with self._lock:
            if not self._recordings:
                event.listen(Engine, "before_cursor_execute", self._record)
            self._recordings.append(recording)

    def discard(self, recording: Recording) -> None:
        from sqlalchemy import Engine, event

        with self._lock:
            if recording in self._recordings:
                self._recordings.remove(recording)
                if not self._recordings:
                    event.remove(Engine, "before_cursor_execute", self._record)

    def _record(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if _TRANSACTION_CONTROL.match(statement):
            return
        recorded = Statement(statement, parameters)
        # Runs on whichever thread executes (the app under ``client`` runs on another one).
        for recording in list(self._recordings):
            recording.statements.append(recorded)


_listener = _Listener()


class PgQueries:
    """The SQL statements the test ran, on any engine (the app's included).

    Counts the statements of the code under test (test body and the app it calls), not the
    harness's own BEGIN / SAVEPOINT / RELEASE / ROLLBACK.

    Example::

        async def test_list_loans_is_two_queries(async_client, pg_queries):
            with pg_queries.at_most(2):
                response = await async_client.get("/loans")
            assert response.status_code == 200
            assert pg_queries.count >= 2
            assert "FROM loan" in pg_queries.statements[0]
    """

    def __init__(self, recording: Recording) -> None:
        self._recording = recording

    @property
    def statements(self) -> list[str]:
        """The SQL text of each statement, in order."""
        return [statement.sql for statement in self._recording.statements]

    @property
    def count(self) -> int:
        return len(self._recording.statements)

    def at_most(self, limit: int) -> AtMost:
        """Fail with an ``AssertionError`` listing the statements if the block runs more
        than ``limit`` of them (only the block's own statements count)."""
        return AtMost(validate_max_queries(limit, "at_most"))

    def __repr__(self) -> str:
        return f"<PgQueries count={self.count}>"


class AtMost:
    """``with pg_queries.at_most(n):``; the failure points at the ``with`` line."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._block = Recording()

    def __enter__(self) -> None:
        self._block.__enter__()

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        __tracebackhide__ = True
        self._block.__exit__()
        statements = self._block.statements
        if exc_type is None and len(statements) > self.limit:
            heading = f"pg_queries.at_most({self.limit}): the block ran"
            raise AssertionError(format_statements(statements, heading, self.limit))


def validate_max_queries(limit: object, what: str = "pg_max_queries") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(
            f"{what}(n) needs a whole number of statements n >= 0, got {limit!r}."
            f" Example: @pytest.mark.pg_max_queries(3)."
        )
    return limit


def format_statements(statements: list[Statement], heading: str, limit: int) -> str:
    lines = [f"{heading} {len(statements)} SQL statements, more than the {limit} allowed:"]
    width = len(str(len(statements)))
    lines += [
        f"  {number:>{width}}. {statement.render()}"
        for number, statement in enumerate(statements, start=1)
    ]
    repeated = [(shape, n) for shape, n in Counter(s.shape for s in statements).items() if n > 1]
    if repeated:
        lines.append("Repeated statement shapes (an N+1 pattern: one query per object):")
        for shape, n in sorted(repeated, key=lambda pair: -pair[1]):
            lines.append(f"  {n}x {_shorten(shape)}")
        lines.append(
            "Fix: load the related objects with the first query"
            " (`.options(selectinload(Parent.children))` or `joinedload(...)`) instead of one"
            " query per object."
        )
    return "\n".join(lines)


# -- per test ------------------------------------------------------------------------------------

_RECORDING_KEY = pytest.StashKey[Recording]()
MAX_QUERIES_MARKER = "pg_max_queries"


def recording_for(item: pytest.Item) -> Recording | None:
    """The test's recording, if it asked for one (``pg_queries`` or ``pg_max_queries``)."""
    recording = item.stash.get(_RECORDING_KEY, None)
    if recording is None and (
        "pg_queries" in getattr(item, "fixturenames", ())
        or item.get_closest_marker(MAX_QUERIES_MARKER) is not None
    ):
        recording = item.stash[_RECORDING_KEY] = Recording()
    return recording


def max_queries(item: pytest.Item) -> int | None:
    """The ``pg_max_queries(n)`` limit of the test; a malformed marker fails the test."""
    __tracebackhide__ = True
    marker = item.get_closest_marker(MAX_QUERIES_MARKER)
    if marker is None:
        return None

    def signature(n: int) -> int:
        return validate_max_queries(n)

    try:
        return signature(*marker.args, **marker.kwargs)
    except (TypeError, ValueError) as exc:
        pytest.fail(f"@pytest.mark.{MAX_QUERIES_MARKER}: {exc}", pytrace=False)


def enforce_max_queries(limit: int | None, recording: Recording) -> None:
    __tracebackhide__ = True
    if limit is not None and len(recording.statements) > limit:
        heading = f"@pytest.mark.{MAX_QUERIES_MARKER}({limit}): the test ran"
        pytest.fail(
            format_statements(recording.statements, heading, limit),
            pytrace=False,
        )
