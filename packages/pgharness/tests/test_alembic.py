"""Alembic builds: env.py gets pgharness's database, migrates it, and leaves logging alone.

The projects use Alembic's own ``alembic.ini`` logging sections (``alembic`` at INFO) and an
``env.py`` that calls ``fileConfig`` as Alembic's templates do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DeveloperDatabase
from test_template import drop_lineage

pytest.importorskip("alembic")

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/migrations

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

ENV_HEAD = """\
import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlalchemy.ext.asyncio import async_engine_from_config

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)
target_metadata = None
"""

# Alembic's cookbook, "Sharing a Connection across one or more programmatic migration commands".
COOKBOOK_SYNC_ENV = (
    ENV_HEAD
    + """
def run_migrations_online():
    connectable = config.attributes.get("connection", None)
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section), prefix="sqlalchemy.",
            poolclass=pool.NullPool)
        with connectable.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
    else:
        context.configure(connection=connectable, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()

run_migrations_online()
"""
)

ASYNC_ENV = (
    ENV_HEAD
    + """
def do_run_migrations(connection):
    context.configure(connection=connection, target_metadata=target_metadata{options})
    with context.begin_transaction():
        context.run_migrations()

async def run_async_migrations():
    connectable = async_engine_from_config(
        config.get_section(config.config_ini_section, {{}}), prefix="sqlalchemy.",
        poolclass=pool.NullPool)
    async with connectable.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await connectable.dispose()

def run_migrations_online():
{online}

run_migrations_online()
"""
)

# The cookbook's async form, and Alembic's async template as `alembic init -t async` writes it.
COOKBOOK_ASYNC_ENV = ASYNC_ENV.format(
    options="",
    online="""\
    if (connection := config.attributes.get("connection")) is not None:
        return do_run_migrations(connection)
    asyncio.run(run_async_migrations())""",
)
ASYNC_TEMPLATE_ENV = ASYNC_ENV.format(options="", online="    asyncio.run(run_async_migrations())")

# Uses nothing but the connection it is handed.
CONNECTION_ONLY_ENV = """
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
"""

REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "r1"
down_revision = None

def upgrade():
    op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True))
"""

CHECK_MIGRATED = """
from sqlalchemy import text

def test_migrated(db):
    assert db.scalars(text("select count(*) from orders")).all() == [0]
    assert db.scalars(text("select version_num from {version_table}")).all() == ["r1"]
"""


MakeProject = Callable[..., None]


@pytest.fixture
def make_project() -> Iterator[MakeProject]:
    """Writes an Alembic project into a folder; its templates are dropped afterwards.

    Each project keeps its migrations in a folder of its own name, so that its templates on
    the machine's server are of a lineage of their own.
    """
    settings: list[str] = []

    def make(
        root: Path,
        env: str,
        *,
        ini: str = "",
        version_table: str = "alembic_version",
        revision: str = REVISION,
    ) -> None:
        folder = root / f"db_{uuid.uuid4().hex[:8]}"
        (folder / "migrations" / "versions").mkdir(parents=True)
        (folder / "alembic.ini").write_text(ALEMBIC_INI)
        (folder / "migrations" / "env.py").write_text(env)
        (folder / "migrations" / "versions" / "r1.py").write_text(revision)
        setting = f"alembic:{folder.name}/alembic.ini"
        settings.append(setting)
        (root / "pytest.ini").write_text(
            f"[pytest]\npythonpath = .\npgharness_schema = {setting}\n{ini}"
        )
        (root / "test_migrated.py").write_text(CHECK_MIGRATED.format(version_table=version_table))

    yield make
    for setting in settings:
        drop_lineage(setting)


ENVS = {
    "cookbook-sync": COOKBOOK_SYNC_ENV,
    "cookbook-async": COOKBOOK_ASYNC_ENV,
    "alembic-async-template": ASYNC_TEMPLATE_ENV,
    "connection-only": CONNECTION_ONLY_ENV,
}


@pytest.mark.parametrize("env", sorted(ENVS))
def test_env_py_migrates_pgharness_database(
    project: pytest.Pytester, make_project: MakeProject, server_args: list[str], env: str
) -> None:
    make_project(project.path, ENVS[env])

    result = project.runpytest(*server_args, "-p", "no:randomly", "-s")

    result.assert_outcomes(passed=1)
    output = result.stdout.str() + result.stderr.str()
    assert "Running upgrade" not in output
    assert "Context impl" not in output


def test_version_table_of_its_own_in_a_schema_from_setup_sql(
    project: pytest.Pytester, make_project: MakeProject, runtime_dir: Path
) -> None:
    options = ', version_table="schema_versions", version_table_schema="meta"'
    env = ASYNC_ENV.format(
        options=options,
        online="""\
    if (connection := config.attributes.get("connection")) is not None:
        return do_run_migrations(connection)
    asyncio.run(run_async_migrations())""",
    )
    make_project(
        project.path,
        env,
        ini="pgharness_setup_sql = CREATE SCHEMA IF NOT EXISTS meta\n",
        version_table="meta.schema_versions",
    )

    result = project.runpytest("-p", "no:randomly")

    result.assert_outcomes(passed=1)


AUTOCOMMIT_REVISION = (
    REVISION
    + """
    op.execute("CREATE TYPE mood AS ENUM ('calm')")
    with op.get_context().autocommit_block():
        op.execute("ALTER TYPE mood ADD VALUE 'busy'")
        op.execute("CREATE INDEX CONCURRENTLY orders_id ON orders (id)")
"""
)


def test_a_migration_with_an_autocommit_block_runs(
    project: pytest.Pytester, make_project: MakeProject, runtime_dir: Path
) -> None:
    # Statements PostgreSQL runs only outside a transaction work as from the command line.
    make_project(project.path, COOKBOOK_SYNC_ENV, revision=AUTOCOMMIT_REVISION)

    result = project.runpytest("-p", "no:randomly")

    result.assert_outcomes(passed=1)


APP_SETTINGS = """
DATABASE_URL = {url!r}  # the developer's own database, as the app's settings name it
"""

ENV_OF_ITS_OWN = {
    "sync": """
from alembic import context
from sqlalchemy import create_engine

from myapp.settings import DATABASE_URL

with create_engine(DATABASE_URL).connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
""",
    "async": """
import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from myapp.settings import DATABASE_URL

def do_run_migrations(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()

async def main():
    engine = create_async_engine(DATABASE_URL)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()

asyncio.run(main())
""",
}


@pytest.mark.parametrize("kind", sorted(ENV_OF_ITS_OWN))
def test_env_py_that_connects_to_the_apps_database_stops_the_run(
    project: pytest.Pytester,
    make_project: MakeProject,
    server_args: list[str],
    developer_database: DeveloperDatabase,
    kind: str,
) -> None:
    make_project(project.path, ENV_OF_ITS_OWN[kind])
    url = developer_database.sync_url if kind == "sync" else developer_database.url
    (project.path / "myapp").mkdir()
    (project.path / "myapp" / "__init__.py").write_text("")
    (project.path / "myapp" / "settings.py").write_text(APP_SETTINGS.format(url=url))

    result = project.runpytest(*server_args, "-p", "no:randomly")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.assert_outcomes()
    output = result.stdout.str() + result.stderr.str()
    assert 'config.attributes.get("connection")' in output, output
    # The blocker stopped it at connect time, and said where and why.
    assert "pgharness stopped a connection to" in output, output
    assert "while building the template from pgharness_schema = 'alembic:" in output
    assert "env.py connects to the database of your own settings" in output
    developer_database.assert_untouched()


def test_env_py_that_migrates_an_allowed_database_instead_stops_the_run(
    project: pytest.Pytester,
    make_project: MakeProject,
    runtime_dir: Path,
    developer_database: DeveloperDatabase,
) -> None:
    # The blocker lets an allowed database through: the version table check still sees that
    # pgharness's template was not migrated, and no test runs on an empty schema.
    make_project(
        project.path,
        ENV_OF_ITS_OWN["sync"],
        ini=f"pgharness_allow_urls = {developer_database.sync_url}\n",
    )
    (project.path / "myapp").mkdir()
    (project.path / "myapp" / "__init__.py").write_text("")
    settings = APP_SETTINGS.format(url=developer_database.sync_url)
    (project.path / "myapp" / "settings.py").write_text(settings)

    result = project.runpytest("-p", "no:randomly")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.assert_outcomes()
    output = result.stdout.str()
    assert "the migrations did not run in pgharness's database" in output
    assert 'if (connection := config.attributes.get("connection")) is not None:' in output


def test_env_py_that_migrates_nothing_stops_the_run_with_the_fix(
    project: pytest.Pytester, make_project: MakeProject, runtime_dir: Path
) -> None:
    # A common slip: the online branch is never called, so `upgrade` succeeds doing nothing.
    make_project(
        project.path,
        """
from alembic import context

def run_migrations_online():
    with context.begin_transaction():
        context.run_migrations()

if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"))
    with context.begin_transaction():
        context.run_migrations()
""",
    )

    result = project.runpytest("-p", "no:randomly")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.assert_outcomes()
    output = result.stdout.str()
    assert "has no Alembic version table" in output
    assert "the migrations did not run in pgharness's database" in output
    assert 'if (connection := config.attributes.get("connection")) is not None:' in output


APP_LOGGING = """
import logging

class Remember(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

remember = Remember()
"""

CONFTEST_LOGGING = """
import logging

from myapp.log import remember

app_logger = logging.getLogger("myapp")
app_logger.setLevel(logging.INFO)
app_logger.addHandler(remember)
app_logger.addHandler(logging.FileHandler("app.log", mode="w"))
"""

CHECK_LOGGING = """
import logging
from pathlib import Path

from myapp.log import remember

def test_app_logging_still_works(pg_database):
    logger = logging.getLogger("myapp")
    logger.info("order placed")
    for handler in logger.handlers:
        handler.flush()
    assert not logger.disabled
    assert remember.messages == ["order placed"]
    assert Path("app.log").read_text() == "order placed\\n"
    # fileConfig would have left a stderr handler on the root logger
    assert [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler] == []
"""


def test_the_build_leaves_the_runs_logging_as_it_was(
    project: pytest.Pytester, make_project: MakeProject, runtime_dir: Path
) -> None:
    make_project(project.path, COOKBOOK_SYNC_ENV)
    (project.path / "myapp").mkdir()
    (project.path / "myapp" / "__init__.py").write_text("")
    (project.path / "myapp" / "log.py").write_text(APP_LOGGING)
    (project.path / "conftest.py").write_text(CONFTEST_LOGGING)
    (project.path / "test_logging.py").write_text(CHECK_LOGGING)

    result = project.runpytest_subprocess(
        "-p", "no:randomly", "-s", "-o", "log_cli=true", "--log-cli-level=INFO"
    )

    result.assert_outcomes(passed=2)
    output = result.stdout.str() + result.stderr.str()
    assert "INFO  [alembic" not in output
    assert "Running upgrade" not in output
    assert "Context impl" not in output
