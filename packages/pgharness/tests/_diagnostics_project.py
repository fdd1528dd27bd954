"""Projects that really fail the way the troubleshooting guide's five attempts failed.

Each project is plain SQLAlchemy + pytest-asyncio (no pgharness fixture), written by pytester
and run in a subprocess against a scratch database on the machine's PostgreSQL server, so the
errors are the real driver and SQLAlchemy errors a user would see.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

ADMIN_URL = os.environ.get("PGHARNESS_TEST_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SCRATCH_PREFIX = "pgh3diag_"

MODELS = textwrap.dedent(
    """
    from sqlalchemy import ForeignKey, String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


    class Base(DeclarativeBase):
        pass


    class Book(Base):
        __tablename__ = "book"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(50))
        blurb: Mapped[str] = mapped_column(String(50), deferred=True, default="")


    class Loan(Base):
        __tablename__ = "loan"
        id: Mapped[int] = mapped_column(primary_key=True)
        book_id: Mapped[int] = mapped_column(ForeignKey("book.id"))
        book: Mapped[Book] = relationship()
    """
)

# Module globals and locals that answer attributes in odd ways. The diagnostics read every
# module's globals and the failing frames' locals: they must not ask these anything.
ODDITIES = textwrap.dedent(
    """
    from ctypes import cdll  # answers any attribute by loading a shared library of that name
    from unittest.mock import MagicMock


    class Unanswerable:
        \"\"\"Every attribute lookup fails (and is written down).\"\"\"

        asked = []

        def __getattr__(self, name):
            Unanswerable.asked.append(name)
            raise RuntimeError(f"{name}: nothing here")


    unanswerable = Unanswerable()
    mock = MagicMock()
    """
)

#: A test that fails if anything was asked of ``oddities``' objects (run after the failure).
ODDITIES_UNTOUCHED = textwrap.dedent(
    """
    def test_the_explanation_asked_nothing_of_the_odd_objects():
        from unittest.mock import MagicMock

        import oddities

        assert oddities.Unanswerable.asked == []
        assert dir(oddities.mock) == dir(MagicMock())
    """
)

INI = textwrap.dedent(
    """
    [pytest]
    asyncio_mode = auto
    asyncio_default_fixture_loop_scope = function
    """
)


@contextmanager
def scratch_database() -> Iterator[str]:
    """A new empty database; yields its asyncpg URL and drops it afterwards."""
    name = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_project(pytester: pytest.Pytester, url: str, **files: str) -> None:
    """The models, the ini and ``files`` (``DATABASE_URL`` in them is the scratch database)."""
    pytester.makefile(".ini", pytest=INI)
    pytester.makepyfile(models=MODELS)
    pytester.makepyfile(
        **{name: textwrap.dedent(text).replace("DATABASE_URL", url) for name, text in files.items()}
    )


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)


def pgharness_section(result: pytest.RunResult) -> str:
    """The text of the pgharness report sections (empty if there is none)."""
    lines = result.outlines
    sections: list[str] = []
    inside = False
    for line in lines:
        if line.startswith("-") and " pgharness " in line:
            inside = True
            continue
        if inside and (line.startswith(("_", "=", "/")) or line.startswith("E ")):
            inside = False
        if inside:
            sections.append(line)
    return "\n".join(sections)
