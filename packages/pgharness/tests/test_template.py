"""The template layer: built once per schema, reused while the schema is unchanged.

A template is named by its lineage (the schema setting, as written) and a hash of its
source, so the projects here use a module or folder name of their own: tests running at the
same time on the machine's server never share a lineage.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import EXTERNAL_URL, database_names
from pgharness._names import project_lineage

TEMPLATE_LINE = re.compile(r"template (pgh_tpl_[0-9a-f]{8}_[0-9a-f]{16}) (built|reused) in")

MODELS = """
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class Item(Base):
    __tablename__ = "{table}"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    {extra}
"""

CHECK_TABLE = """
import psycopg

def test_schema_is_there(pg_database):
    url = pg_database.sync_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        columns = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns "
            "where table_name = '{table}' order by ordinal_position")]
    print("COLUMNS", columns)
    assert "id" in columns
"""


def template_of(result: pytest.RunResult) -> tuple[str, str]:
    """The template a run used, and whether it was "built" or "reused" (from its header)."""
    match = TEMPLATE_LINE.search(result.stdout.str())
    assert match is not None, result.stdout.str()
    return match[1], match[2]


def lineage_of(name: str) -> str:
    """``pgh_tpl_<lineage>_``: the start shared by every version of a template."""
    return name[: len("pgh_tpl_") + 9]


def drop_templates(*names: str) -> None:
    """Drop every template of the lineages of ``names`` on the machine's server."""
    with psycopg.connect(EXTERNAL_URL, autocommit=True) as conn:
        for prefix in {lineage_of(name) for name in names}:
            for template in database_names(conn, prefix.replace("_", "\\_") + "%"):
                conn.execute(f'ALTER DATABASE "{template}" WITH IS_TEMPLATE false')
                conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')


def drop_lineage(setting: str) -> None:
    """Drop every template the schema setting ``setting`` built on the machine's server."""
    drop_templates(f"pgh_tpl_{project_lineage(setting)[:8]}_")


def run_in(pytester: pytest.Pytester, root: Path, *args: str) -> pytest.RunResult:
    """Run pytest in ``root`` (a project folder of its own), against the machine's server."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        return pytester.runpytest(
            "-p", "no:randomly", f"--pg-url={EXTERNAL_URL}", "-s", "--rootdir", str(root), *args
        )


def test_metadata_template_is_reused_then_rebuilt_after_a_change(
    project: pytest.Pytester, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    table = f"items_{uuid.uuid4().hex[:8]}"  # a schema no other run has built
    module = f"models_{table}"
    project.makeini(f"[pytest]\npgharness_schema = {module}:Base\n")
    project.makepyfile(**{module: MODELS.format(table=table, extra="")})
    project.makepyfile(test_it=CHECK_TABLE.format(table=table))
    args = ("-p", "no:randomly", f"--pg-url={EXTERNAL_URL}", "-s")

    first = project.runpytest(*args)
    second = project.runpytest(*args)
    project.makepyfile(
        **{
            module: MODELS.format(
                table=table, extra="name: Mapped[str] = mapped_column(String(20))"
            )
        }
    )
    third = project.runpytest(*args)

    first_name, first_how = template_of(first)
    second_name, second_how = template_of(second)
    third_name, third_how = template_of(third)
    try:
        for result in (first, second, third):
            result.assert_outcomes(passed=1)
        assert (first_how, second_how, third_how) == ("built", "reused", "built")
        assert first_name == second_name != third_name
        assert lineage_of(first_name) == lineage_of(third_name), "one project, one lineage"
        assert "COLUMNS ['id', 'name']" in third.stdout.str()
        # The older version stays, within the three a server keeps per lineage.
        assert {first_name, third_name} <= database_names(admin, "pgh_tpl_%")
    finally:
        drop_templates(first_name)


ALEMBIC_ENV = """
from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

engine = create_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

ASYNC_ALEMBIC_ENV = """
import asyncio
from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

def run(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()

async def main():
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as connection:
        await connection.run_sync(run)
    await engine.dispose()

asyncio.run(main())
"""

REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = {down}

def upgrade():
    {body}
"""


def make_alembic_project(root: Path, env: str, table: str, folder: str = "db") -> str:
    """An Alembic project in ``root`` (migrations in ``folder``); returns its schema setting."""
    versions = root / folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / folder / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / folder / "migrations" / "env.py").write_text(env)
    (versions / "r1.py").write_text(
        REVISION.format(
            rev="r1",
            down="None",
            body=f"op.create_table('{table}', sa.Column('id', sa.Integer, primary_key=True))",
        )
    )
    (root / "test_it.py").write_text(CHECK_TABLE.format(table=table))
    return f"alembic:{folder}/alembic.ini"


@pytest.mark.parametrize("env", [ALEMBIC_ENV, ASYNC_ALEMBIC_ENV], ids=["sync-env", "async-env"])
def test_alembic_template_is_reused_then_rebuilt_after_a_new_migration(
    project: pytest.Pytester, admin: psycopg.Connection[tuple[object, ...]], env: str
) -> None:
    pytest.importorskip("alembic")
    table = f"items_{uuid.uuid4().hex[:8]}"
    folder = f"db_{table}"
    setting = make_alembic_project(project.path, env, table, folder)
    project.makeini(f"[pytest]\npgharness_schema = {setting}\n")
    args = ("-p", "no:randomly", f"--pg-url={EXTERNAL_URL}", "-s")

    first = project.runpytest(*args)
    second = project.runpytest(*args)
    (project.path / folder / "migrations" / "versions" / "r2.py").write_text(
        REVISION.format(
            rev="r2", down="'r1'", body=f"op.add_column('{table}', sa.Column('extra', sa.Text))"
        )
    )
    third = project.runpytest(*args)

    try:
        for result in (first, second, third):
            result.assert_outcomes(passed=1)
        hows = [template_of(r)[1] for r in (first, second, third)]
        assert hows == ["built", "reused", "built"]
        assert "COLUMNS ['id', 'extra']" in third.stdout.str()
        assert template_of(first)[0] != template_of(third)[0]
    finally:
        drop_templates(template_of(first)[0])


def test_embedded_server_builds_the_schema_into_each_runs_template(
    project: pytest.Pytester, runtime_dir: Path
) -> None:
    table = f"items_{uuid.uuid4().hex[:8]}"
    project.makeini("[pytest]\npgharness_schema = models:Base\n")
    project.makepyfile(models=MODELS.format(table=table, extra=""))
    project.makepyfile(test_it=CHECK_TABLE.format(table=table))

    result = project.runpytest("-p", "no:randomly", "-s")

    result.assert_outcomes(passed=1)
    assert template_of(result)[1] == "built"
    assert "COLUMNS ['id']" in result.stdout.str()


@pytest.mark.parametrize("form", ["metadata", "alembic"])
def test_two_checkouts_of_one_project_share_one_template(
    project: pytest.Pytester, form: str
) -> None:
    # One project checked out twice (two CI workspaces, a worktree): the second checkout
    # reuses the template the first one built.
    if form == "alembic":
        pytest.importorskip("alembic")
    table = f"items_{uuid.uuid4().hex[:8]}"
    checkouts = [project.mkdir("checkout-one"), project.mkdir("elsewhere-two")]
    for root in checkouts:
        if form == "alembic":
            setting = make_alembic_project(root, ALEMBIC_ENV, table, f"db_{table}")
        else:
            setting = f"models_{table}:Base"
            (root / f"models_{table}.py").write_text(MODELS.format(table=table, extra=""))
            (root / "test_it.py").write_text(CHECK_TABLE.format(table=table))
        (root / "pytest.ini").write_text(f"[pytest]\npgharness_schema = {setting}\n")

    first, second = (run_in(project, root) for root in checkouts)

    try:
        first.assert_outcomes(passed=1)
        second.assert_outcomes(passed=1)
        assert template_of(first)[1] == "built"
        assert template_of(second) == (template_of(first)[0], "reused")
    finally:
        drop_templates(template_of(first)[0])


SEEDED_MODELS = """
from sqlalchemy import Integer, String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class Currency(Base):
    __tablename__ = "currencies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(3))

rows = {rows!r}

@event.listens_for(Currency.__table__, "after_create")
def seed(target, connection, **kw):
    {insert}
"""

CHECK_SEED = """
from sqlalchemy import text

def test_seeded(db):
    print("CODES", db.scalars(text("select code from currencies order by id")).all())
"""

INSERTS = {
    "execute-parameters": "connection.execute(target.insert(), rows)",
    "values": "connection.execute(target.insert().values(rows))",
}


@pytest.mark.parametrize("insert", sorted(INSERTS))
def test_changed_seed_rows_build_a_new_template(project: pytest.Pytester, insert: str) -> None:
    module = f"currencies_{uuid.uuid4().hex[:8]}"
    project.makeini(f"[pytest]\npgharness_schema = {module}:Base\n")
    project.makepyfile(test_it=CHECK_SEED)
    runs = []
    for codes in (["USD", "EUR"], ["USD", "EUR", "GBP"]):
        rows = [{"code": code} for code in codes]
        source = SEEDED_MODELS.format(rows=rows, insert=INSERTS[insert])
        project.makepyfile(**{module: source})
        runs.append(project.runpytest("-p", "no:randomly", f"--pg-url={EXTERNAL_URL}", "-s"))

    first, second = runs
    try:
        first.assert_outcomes(passed=1)
        second.assert_outcomes(passed=1)
        assert "CODES ['USD', 'EUR']" in first.stdout.str()
        assert "CODES ['USD', 'EUR', 'GBP']" in second.stdout.str()
        assert template_of(second)[1] == "built"
        assert template_of(first)[0] != template_of(second)[0]
    finally:
        drop_templates(template_of(first)[0])


def test_a_server_keeps_three_templates_of_a_schema_and_never_another_schemas(
    project: pytest.Pytester, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    # Two projects on one server, each with its own schema setting: five versions of the
    # second one leave three of its templates, and the first project's template alone.
    roots = {}
    for name in ("ours", "theirs"):
        table = f"{name}_{uuid.uuid4().hex[:8]}"
        root = roots[name] = project.mkdir(name)
        (root / "pytest.ini").write_text(f"[pytest]\npgharness_schema = models_{table}:Base\n")
        (root / f"models_{table}.py").write_text(MODELS.format(table=table, extra=""))
        (root / "test_it.py").write_text(CHECK_TABLE.format(table=table))

    def run(name: str) -> tuple[str, str]:
        result = run_in(project, roots[name])
        result.assert_outcomes(passed=1)
        return template_of(result)

    ours = run("ours")
    theirs = []
    try:
        models = next(roots["theirs"].glob("models_*.py"))
        table = models.stem.removeprefix("models_")
        for version in range(5):
            extra = f"v{version}: Mapped[str] = mapped_column(String(9))"
            models.write_text(MODELS.format(table=table, extra=extra))
            theirs.append(run("theirs"))
        again = run("ours")

        assert [how for _, how in theirs] == ["built"] * 5
        remaining = database_names(admin, lineage_of(theirs[0][0]).replace("_", "\\_") + "%")
        assert remaining == {name for name, _ in theirs[-3:]}, "the three newest stay"
        assert ours[1] == "built"
        assert again == (ours[0], "reused")
    finally:
        drop_templates(ours[0], *(name for name, _ in theirs))
