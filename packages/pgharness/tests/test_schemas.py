"""Schemas and set-up SQL: what the schema needs exists before it is built."""

from __future__ import annotations

import uuid

import pytest
from test_template import EXTERNAL_URL, drop_lineage, drop_templates, template_of

LEDGER_MODELS = """
import enum

from sqlalchemy import Enum, ForeignKey, Sequence, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class Kind(enum.Enum):
    debit = "debit"
    credit = "credit"

class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = {"schema": "ledger"}
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))

class Entry(Base):
    __tablename__ = "entries"
    __table_args__ = {"schema": "ledger"}
    id: Mapped[int] = mapped_column(Sequence("entry_ids", schema="numbering"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger.accounts.id"))
    kind: Mapped[Kind] = mapped_column(Enum(Kind, name="entry_kind", schema="kinds"))
"""

LEDGER_TESTS = """
from sqlalchemy import select
from models import Account, Entry, Kind

def test_ledger_tables_take_rows(db):
    account = Account(name="cash")
    db.add(account)
    db.flush()
    db.add(Entry(account_id=account.id, kind=Kind.credit))
    db.commit()
    assert db.scalars(select(Entry.kind)).all() == [Kind.credit]
"""


def test_tables_in_their_own_schema_are_built(
    project: pytest.Pytester, server_args: list[str]
) -> None:
    module = f"ledger_{uuid.uuid4().hex[:8]}"  # a lineage of its own on the machine's server
    project.makeini(f"[pytest]\npgharness_schema = {module}:Base\n")
    project.makepyfile(
        **{module: LEDGER_MODELS}, test_ledger=LEDGER_TESTS.replace("from models", f"from {module}")
    )

    result = project.runpytest(*server_args, "-p", "no:randomly")

    drop_lineage(f"{module}:Base")
    result.assert_outcomes(passed=1)


CITEXT_MODELS = """
from sqlalchemy import Index, String
from sqlalchemy.dialects.postgresql import CITEXT
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(CITEXT, unique=True)
    name: Mapped[str] = mapped_column(String(50))
    __table_args__ = (
        Index("users_name_trgm", "name", postgresql_using="gin",
              postgresql_ops={"name": "gin_trgm_ops"}),
    )
"""

CITEXT_TESTS = """
from sqlalchemy import func, select
from models import User

def test_extensions_are_there(db):
    db.add(User(email="Ada@Example.com", name="Ada Lovelace"))
    db.commit()
    assert db.scalar(select(User.name).where(User.email == "ada@example.COM")) == "Ada Lovelace"
    assert db.scalar(select(func.similarity(User.name, "ada lovlace"))) > 0.5
"""

SETUP_SQL = """
pgharness_setup_sql =
    CREATE EXTENSION IF NOT EXISTS citext;
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
"""


def test_setup_sql_runs_before_the_schema(project: pytest.Pytester, server_args: list[str]) -> None:
    module = f"users_{uuid.uuid4().hex[:8]}"
    project.makeini(f"[pytest]\npgharness_schema = {module}:Base\n" + SETUP_SQL)
    project.makepyfile(
        **{module: CITEXT_MODELS}, test_users=CITEXT_TESTS.replace("from models", f"from {module}")
    )

    result = project.runpytest(*server_args, "-p", "no:randomly")

    drop_lineage(f"{module}:Base")
    result.assert_outcomes(passed=1)


EXTENSIONS_TEST = """
from sqlalchemy import text

def test_extensions(db):
    print("EXTENSIONS", db.scalars(text("select extname from pg_extension order by 1")).all())
"""


def test_setup_sql_is_part_of_the_templates_name(project: pytest.Pytester) -> None:
    module = f"models_{uuid.uuid4().hex[:8]}"
    project.makepyfile(
        **{module: CITEXT_MODELS.replace("CITEXT, unique=True", "String(50), unique=True")},
        test_extensions=EXTENSIONS_TEST,
    )
    args = ("-p", "no:randomly", f"--pg-url={EXTERNAL_URL}", "-s")
    runs = []
    for extensions in (["pg_trgm"], ["pg_trgm", "citext"]):
        setup = "".join(f"\n    CREATE EXTENSION IF NOT EXISTS {name};" for name in extensions)
        project.makeini(
            f"[pytest]\npgharness_schema = {module}:Base\npgharness_setup_sql ={setup}\n"
        )
        runs.append(project.runpytest(*args))

    first, second = runs
    try:
        first.assert_outcomes(passed=1)
        second.assert_outcomes(passed=1)
        assert "EXTENSIONS ['pg_trgm', 'plpgsql']" in first.stdout.str()
        assert "EXTENSIONS ['citext', 'pg_trgm', 'plpgsql']" in second.stdout.str()
        assert template_of(first)[1] == template_of(second)[1] == "built"
        assert template_of(first)[0] != template_of(second)[0]
    finally:
        drop_templates(template_of(first)[0])


def test_failing_setup_sql_stops_the_run_naming_the_setting(
    project: pytest.Pytester, runtime_dir: object
) -> None:
    project.makeini(
        "[pytest]\npgharness_schema = models:Base\n"
        "pgharness_setup_sql = CREATE EXTENSION IF NOT EXISTS no_such_extension\n"
    )
    project.makepyfile(models=CITEXT_MODELS, test_users=CITEXT_TESTS)

    result = project.runpytest("-p", "no:randomly")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.assert_outcomes()
    output = result.stdout.str() + result.stderr.str()
    assert "pgharness_setup_sql failed" in output
    assert 'extension "no_such_extension" is not available' in output
    assert "Fix: correct pgharness_setup_sql" in output
