"""The template layer: built once per schema, reused while the schema is unchanged."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest
from conftest import EXTERNAL_URL, database_names

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


def _template(result: pytest.RunResult) -> tuple[str, str]:
    match = TEMPLATE_LINE.search(result.stdout.str())
    assert match is not None, result.stdout.str()
    return match[1], match[2]


def test_metadata_template_is_reused_then_rebuilt_after_a_change(
    project: pytest.Pytester, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    table = f"items_{uuid.uuid4().hex[:8]}"  # a schema no other run has built
    project.makeini("[pytest]\npgharness_schema = models:Base\n")
    project.makepyfile(models=MODELS.format(table=table, extra=""))
    project.makepyfile(test_it=CHECK_TABLE.format(table=table))
    args = ("-p", "no:randomly", f"--pg-url={EXTERNAL_URL}", "-s")

    first = project.runpytest_subprocess(*args)
    second = project.runpytest_subprocess(*args)
    project.makepyfile(
        models=MODELS.format(table=table, extra="name: Mapped[str] = mapped_column(String(20))")
    )
    third = project.runpytest_subprocess(*args)

    for result in (first, second, third):
        result.assert_outcomes(passed=1)
    first_name, first_how = _template(first)
    second_name, second_how = _template(second)
    third_name, third_how = _template(third)
    assert (first_how, second_how, third_how) == ("built", "reused", "built")
    assert first_name == second_name != third_name
    assert "COLUMNS ['id', 'name']" in third.stdout.str()
    templates = database_names(admin, "pgh_tpl_%")
    assert third_name in templates
    assert first_name not in templates, "the stale template must be dropped"
    with psycopg.connect(EXTERNAL_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{third_name}" WITH IS_TEMPLATE false')
        conn.execute(f'DROP DATABASE "{third_name}"')


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


def _alembic_project(project: pytest.Pytester, env: str, table: str) -> None:
    project.makeini("[pytest]\npgharness_schema = alembic:db/alembic.ini\n")
    (project.path / "db" / "migrations" / "versions").mkdir(parents=True)
    (project.path / "db" / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\n"
    )
    (project.path / "db" / "migrations" / "env.py").write_text(env)
    (project.path / "db" / "migrations" / "versions" / "r1.py").write_text(
        REVISION.format(
            rev="r1",
            down="None",
            body=f"op.create_table('{table}', sa.Column('id', sa.Integer, primary_key=True))",
        )
    )
    project.makepyfile(test_it=CHECK_TABLE.format(table=table))


@pytest.mark.parametrize("env", [ALEMBIC_ENV, ASYNC_ALEMBIC_ENV], ids=["sync-env", "async-env"])
def test_alembic_template_is_reused_then_rebuilt_after_a_new_migration(
    project: pytest.Pytester, admin: psycopg.Connection[tuple[object, ...]], env: str
) -> None:
    pytest.importorskip("alembic")
    table = f"items_{uuid.uuid4().hex[:8]}"
    _alembic_project(project, env, table)
    args = ("-p", "no:randomly", f"--pg-url={EXTERNAL_URL}", "-s")

    first = project.runpytest_subprocess(*args)
    second = project.runpytest_subprocess(*args)
    (project.path / "db" / "migrations" / "versions" / "r2.py").write_text(
        REVISION.format(
            rev="r2", down="'r1'", body=f"op.add_column('{table}', sa.Column('extra', sa.Text))"
        )
    )
    third = project.runpytest_subprocess(*args)

    for result in (first, second, third):
        result.assert_outcomes(passed=1)
    hows = [_template(r)[1] for r in (first, second, third)]
    assert hows == ["built", "reused", "built"]
    assert "COLUMNS ['id', 'extra']" in third.stdout.str()
    third_name = _template(third)[0]
    assert _template(first)[0] not in database_names(admin, "pgh_tpl_%")
    with psycopg.connect(EXTERNAL_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{third_name}" WITH IS_TEMPLATE false')
        conn.execute(f'DROP DATABASE "{third_name}"')


def test_embedded_server_builds_the_schema_into_each_runs_template(
    project: pytest.Pytester,
) -> None:
    table = f"items_{uuid.uuid4().hex[:8]}"
    project.makeini("[pytest]\npgharness_schema = models:Base\n")
    project.makepyfile(models=MODELS.format(table=table, extra=""))
    project.makepyfile(test_it=CHECK_TABLE.format(table=table))

    result = project.runpytest_subprocess("-p", "no:randomly", "-s")

    result.assert_outcomes(passed=1)
    assert _template(result)[1] == "built"
    assert "COLUMNS ['id']" in result.stdout.str()


def test_another_projects_schema_change_leaves_this_projects_template_alone(
    pytester: pytest.Pytester, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    # Two projects on one server, each with its own schema: when the second one's schema
    # changes, only its own old template may go.
    args = ("-p", "no:randomly", f"--pg-url={EXTERNAL_URL}", "-s")
    tables = {name: f"items_{uuid.uuid4().hex[:8]}" for name in ("ours", "theirs")}
    roots = {}
    for name, table in tables.items():
        root = pytester.mkdir(name)
        (root / "pytest.ini").write_text("[pytest]\npgharness_schema = models:Base\n")
        (root / "models.py").write_text(MODELS.format(table=table, extra=""))
        (root / "test_it.py").write_text(CHECK_TABLE.format(table=table).replace("\n    ", "\n"))
        roots[name] = root

    def run(name: str) -> pytest.RunResult:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(roots[name])
            result = pytester.runpytest_subprocess(*args, "--rootdir", str(roots[name]))
        result.assert_outcomes(passed=1)
        return result

    ours, ours_how = _template(run("ours"))
    (roots["theirs"] / "models.py").write_text(
        MODELS.format(table=tables["theirs"], extra="name: Mapped[str] = mapped_column(String(9))")
    )
    theirs, _ = _template(run("theirs"))
    again, again_how = _template(run("ours"))
    try:
        assert (ours_how, again_how) == ("built", "reused")
        assert again == ours
        assert ours in database_names(admin, "pgh_tpl_%")
    finally:
        with psycopg.connect(EXTERNAL_URL, autocommit=True) as conn:
            for name in {ours, theirs}:
                conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
