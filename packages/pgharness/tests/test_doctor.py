"""The doctor: problems (exit 1) and advice (exit 0), each with where it is and the fix.

Every project is small and written by pytester: a healthy one that must pass, and one broken
project per problem, each run through ``pytest --pg-doctor`` (or the console script) in a
subprocess, so nothing it imports stays behind.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

HEALTHY_APP = textwrap.dedent(
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from sqlalchemy import ForeignKey
    from sqlalchemy.ext.asyncio import AsyncAttrs, async_sessionmaker, create_async_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


    class Base(AsyncAttrs, DeclarativeBase):
        pass


    class Customer(Base):
        __tablename__ = "customer"
        id: Mapped[int] = mapped_column(primary_key=True)
        orders: Mapped[list["Order"]] = relationship(lazy="raise")


    class Order(Base):
        __tablename__ = "orders"
        id: Mapped[int] = mapped_column(primary_key=True)
        customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))


    engine = create_async_engine("postgresql+asyncpg://app@db.invalid/app")
    SessionLocal = async_sessionmaker(engine)


    @asynccontextmanager
    async def lifespan(app):
        async with SessionLocal() as session:
            app.state.ready = session is not None
        yield


    app = FastAPI(lifespan=lifespan)
    """
)

HEALTHY_INI = """
[pytest]
asyncio_mode = {mode}
asyncio_default_fixture_loop_scope = function
pgharness_schema = myapp:Base
pgharness_sessionmakers = myapp:SessionLocal
pgharness_app = myapp:app
"""

ASYNC_TESTS = textwrap.dedent(
    """
    import pytest


    async def test_unmarked_one(async_db):
        pass


    @pytest.mark.asyncio
    async def test_marked(async_db):
        pass


    class TestGroup:
        async def test_unmarked_two(self, async_db):
            pass


    def test_sync(db):
        pass


    class TestMarkedGroup:
        pytestmark = pytest.mark.asyncio

        async def test_in_a_marked_class(self, async_db):
            pass
    """
)


def doctor(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--pg-doctor", "-p", "no:randomly")


def finding(out: str, check: str) -> str:
    """The report's text of the first finding of ``check``, up to the blank line after it."""
    start = out.index(f"[{check}]")
    end = out.find("\n\n", start)
    return out[start : end if end != -1 else len(out)]


def healthy_project(pytester: pytest.Pytester, mode: str = "auto") -> None:
    pytester.makepyfile(myapp=HEALTHY_APP, test_app=ASYNC_TESTS)
    pytester.makefile(".ini", pytest=HEALTHY_INI.format(mode=mode))


def test_a_healthy_project_exits_zero_with_advice_under_its_own_heading(
    pytester: pytest.Pytester,
) -> None:
    healthy_project(pytester)
    result = doctor(pytester)
    out = result.stdout.str()
    assert result.ret == 0, out
    assert "problems (" not in out
    assert "advice (worth changing; tests can pass without it):" in out
    # Advice: the engine made at import, expire_on_commit left at its default.
    assert "[engine-at-import] engine `myapp:engine` is created at import time" in out
    assert "   where: myapp.py:25" in finding(out, "engine-at-import")
    assert (
        "[expire-on-commit] async sessionmaker `myapp:SessionLocal` leaves expire_on_commit" in out
    )
    assert "   where: myapp.py:26" in finding(out, "expire-on-commit")
    assert "async_sessionmaker(engine, expire_on_commit=False)" in out
    assert out.rstrip().endswith(
        "pgharness doctor: no problems found, 2 pieces of advice (exit status 0)."
    )
    # Only what the settings name is listed as configured.
    assert "sessionmakers (pgharness_sessionmakers): myapp:SessionLocal" in out
    assert "found in the project, not configured" not in out
    assert "app (pgharness_app): myapp:app" in out
    # No test ran.
    assert "passed" not in out


def test_a_project_without_findings_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        myapp="""
        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
        from sqlalchemy.orm import DeclarativeBase
        from sqlalchemy.pool import NullPool


        class Base(DeclarativeBase):
            pass


        engine = create_async_engine("postgresql+asyncpg://app@db.invalid/app", poolclass=NullPool)
        SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
        """
    )
    pytester.makefile(
        ".ini",
        pytest="[pytest]\nasyncio_mode = auto\npgharness_schema = myapp:Base\n"
        "pgharness_sessionmakers = myapp:SessionLocal\n",
    )
    result = doctor(pytester)
    assert result.ret == 0
    assert "advice (" not in result.stdout.str()
    result.stdout.fnmatch_lines(["pgharness doctor: no problems found (exit status 0)."])


def test_advice_for_the_guides_set_ups_does_not_fail_the_doctor(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        myapp="""
        from sqlalchemy import ForeignKey
        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


        class Base(DeclarativeBase):
            pass


        class Provider(Base):
            __tablename__ = "provider"
            id: Mapped[int] = mapped_column(primary_key=True)
            tokens: Mapped[list["Token"]] = relationship(back_populates="provider")


        class Token(Base):
            __tablename__ = "token"
            id: Mapped[int] = mapped_column(primary_key=True)
            provider_id: Mapped[int] = mapped_column(ForeignKey("provider.id"))
            provider: Mapped[Provider] = relationship(back_populates="tokens", lazy="raise")


        engine = create_async_engine("postgresql+asyncpg://app@db.invalid/app")
        SessionLocal = async_sessionmaker(engine)
        """,
        conftest="""
        import asyncio

        import pytest
        import pytest_asyncio


        @pytest.fixture(scope="session")
        def event_loop():
            loop = asyncio.new_event_loop()
            yield loop
            loop.close()


        @pytest_asyncio.fixture(scope="session", loop_scope="session")
        async def tables():
            yield
        """,
    )
    pytester.makefile(
        ".ini",
        pytest="[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = session\n"
        "pgharness_schema = myapp:Base\npgharness_sessionmakers = myapp:SessionLocal\n",
    )
    result = doctor(pytester)
    out = result.stdout.str()
    assert result.ret == 0, out
    assert "[lazy-loading] 1 relationship(s) use the default lazy loading" in out
    assert "Provider.tokens" in out
    assert "Token.provider" not in out
    assert "   where: myapp.py:10" in finding(out, "lazy-loading")
    assert '[loop-scope] asyncio_default_fixture_loop_scope = "session" but' in out
    assert "   where: pytest.ini:3" in finding(out, "loop-scope")
    tables = out[out.index("[loop-scope] async fixture `tables`") :]
    assert '[loop-scope] async fixture `tables` (scope="session")' in tables
    assert "   where: conftest.py:15" in finding(tables, "loop-scope")
    assert "[event-loop-fixture] an `event_loop` fixture is defined" in out
    assert "   where: conftest.py:8" in finding(out, "event-loop-fixture")
    assert "pgharness rebinds `myapp:SessionLocal`" in out
    assert "pgharness doctor: no problems found, 6 pieces of advice (exit status 0)." in out


def test_a_misspelled_setting_is_a_problem_with_did_you_mean(pytester: pytest.Pytester) -> None:
    healthy_project(pytester)
    pytester.makefile(
        ".ini", pytest=HEALTHY_INI.format(mode="auto").replace("myapp:Base", "myapp:Bsae")
    )
    result = doctor(pytester)
    out = result.stdout.str()
    assert result.ret == 1
    assert "problems (these stop tests from working):" in out
    assert (
        "1. [settings] pgharness_schema = 'myapp:Bsae': module 'myapp' has no attribute 'Bsae'."
        " Did you mean 'Base'?" in out
    )
    assert "   where: pytest.ini:4" in finding(out, "settings")
    assert "   fix: name an existing object in pgharness_schema." in out
    assert "pgharness doctor: 1 problem" in out


def test_an_unimportable_setting_and_a_bad_url_without_an_ini_file(
    pytester: pytest.Pytester,
) -> None:
    pytester.makefile(
        ".ini", pytest="[pytest]\npgharness_sessionmakers = nowhere.db:SessionLocal\n"
    )
    result = doctor(pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "  sessionmakers (pgharness_sessionmakers): nowhere.db:SessionLocal",
            "1. [[]settings[]] pgharness_sessionmakers = 'nowhere.db:SessionLocal': importing*",
            "   where: pytest.ini:2",
        ]
    )
    pytester.path.joinpath("pytest.ini").unlink()
    result = pytester.runpytest_subprocess(
        "--pg-doctor", "-p", "no:randomly", "--pg-url=mysql://root:hunter2@h/db"
    )
    out = result.stdout.str()
    assert result.ret == 1
    assert "settings: no ini file found" in out
    assert "1. [settings] --pg-url = 'mysql://root:***@h/db' is not a PostgreSQL URL" in out
    assert "hunter2" not in out


def test_a_setting_that_cannot_be_read_is_a_problem(pytester: pytest.Pytester) -> None:
    pytester.makefile(".ini", pytest="[pytest]\npgharness_lifespan = sometimes\n")
    result = doctor(pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "1. [[]settings[]] pgharness_lifespan = 'sometimes': expected 'on' or 'off'.",
            "   where: pytest.ini:2",
            "   fix: pgharness_lifespan = off skips*",
        ]
    )


def test_a_sessionmaker_of_the_wrong_kind_is_a_problem(pytester: pytest.Pytester) -> None:
    healthy_project(pytester)
    pytester.makefile(
        ".ini",
        pytest=HEALTHY_INI.format(mode="auto").replace("myapp:SessionLocal", "myapp:engine"),
    )
    result = doctor(pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["1. [[]settings[]] pgharness_sessionmakers names 'myapp:engine'*"])


def test_a_sessionmaker_the_settings_leave_out_is_a_problem_and_not_listed_as_configured(
    pytester: pytest.Pytester,
) -> None:
    healthy_project(pytester)
    pytester.makefile(
        ".ini",
        pytest=HEALTHY_INI.format(mode="auto").replace(
            "pgharness_sessionmakers = myapp:SessionLocal\n", ""
        ),
    )
    result = doctor(pytester)
    out = result.stdout.str()
    assert result.ret == 1
    assert "sessionmakers (pgharness_sessionmakers): none configured" in out
    assert "sessionmakers found in the project, not configured: myapp:SessionLocal" in out
    assert (
        "1. [unconfigured-sessionmaker] the app has the async_sessionmaker `myapp:SessionLocal`,"
        " which pgharness_sessionmakers does not name" in out
    )
    block = finding(out, "unconfigured-sessionmaker")
    assert "   where: myapp.py:26" in block
    assert '   fix: pgharness_sessionmakers = ["myapp:SessionLocal"] in' in block


def test_unmarked_async_tests_in_strict_mode_are_one_problem(pytester: pytest.Pytester) -> None:
    healthy_project(pytester, mode="strict")
    pytester.makepyfile(
        test_marked_module="""
        import pytest

        pytestmark = pytest.mark.asyncio


        async def test_marked_by_the_module(async_db):
            pass
        """
    )
    result = doctor(pytester)
    out = result.stdout.str()
    assert result.ret == 1, out
    assert (
        "1. [unmarked-async-tests] 2 async tests would not run: asyncio_mode = strict"
        " (pytest-asyncio's default) runs only async tests marked @pytest.mark.asyncio, and they"
        " are not marked:" in out
    )
    assert "  test_app.py:4 test_unmarked_one" in out
    assert "  test_app.py:14 TestGroup.test_unmarked_two" in out
    assert "test_marked" not in out
    assert "   where: test_app.py:4" in out
    assert "   fix: set asyncio_mode = auto in [tool.pytest.ini_options]" in out
    assert out.count("[unmarked-async-tests]") == 1


def test_without_pytest_asyncio_unmarked_async_tests_name_the_install(
    pytester: pytest.Pytester,
) -> None:
    healthy_project(pytester)
    pytester.makefile(
        ".ini", pytest=HEALTHY_INI.format(mode="auto").replace("asyncio_", "# asyncio_")
    )
    result = pytester.runpytest_subprocess("--pg-doctor", "-p", "no:randomly", "-p", "no:asyncio")
    out = result.stdout.str()
    assert result.ret == 1, out
    assert "pytest-asyncio mode: not active" in out
    assert (
        "[unmarked-async-tests] 2 async tests would not run: pytest-asyncio is not active in this"
        " run" in out
    )
    assert "   fix: install pytest-asyncio and set asyncio_mode = auto" in out


def test_a_lifespan_with_its_own_pool_is_a_problem_unless_the_lifespan_is_off(
    pytester: pytest.Pytester,
) -> None:
    healthy_project(pytester)
    pytester.makepyfile(
        myapp=HEALTHY_APP.replace(
            "    async with SessionLocal() as session:\n"
            "        app.state.ready = session is not None\n",
            '    app.state.pool = await asyncpg.create_pool("postgresql://app@db.invalid/app")\n',
        ).replace("from fastapi import FastAPI", "import asyncpg\nfrom fastapi import FastAPI")
        + "\n\naudit_pool = asyncpg.create_pool('postgresql://app@db.invalid/audit')\n"
        + textwrap.dedent(
            """

            @app.on_event("startup")
            async def open_cache():
                app.state.cache = await asyncpg.connect("postgresql://app@db.invalid/cache")
            """
        )
    )
    result = doctor(pytester)
    out = result.stdout.str()
    assert result.ret == 1, out
    assert (
        "[lifespan-connects] `lifespan`, run when the app starts, opens its own connections"
        " (`asyncpg.create_pool(...)`)" in out
    )
    assert "[lifespan-connects] `open_cache`, run when the app starts" in out
    assert "   where: myapp.py:32" in finding(out, "lifespan-connects")
    assert "pgharness_lifespan = off (what it sets up is then missing in tests)" in out
    assert (
        "[connects-at-import] module-level `asyncpg.create_pool(...)` connects while the module"
        " is imported." in out
    )
    assert "   where: myapp.py:39" in finding(out, "connects-at-import")

    pytester.makefile(".ini", pytest=HEALTHY_INI.format(mode="auto") + "pgharness_lifespan = off\n")
    result = doctor(pytester)
    assert "[lifespan-connects]" not in result.stdout.str()
    assert "[connects-at-import]" in result.stdout.str()


ALEMBIC_INI = "[alembic]\nscript_location = migrations\n"

ENV_WITH_ITS_OWN_URL = """
from alembic import context
from sqlalchemy import create_engine

DATABASE_URL = "postgresql+psycopg://app@db.invalid/app"

with create_engine(DATABASE_URL).connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

ENV_OVERRIDING_THE_URL = """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
config.set_main_option("sqlalchemy.url", "postgresql+psycopg://app@db.invalid/app")
engine = engine_from_config(config.get_section(config.config_ini_section), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

ENV_USING_THE_GIVEN_CONNECTION = ENV_OVERRIDING_THE_URL.replace(
    "engine = engine_from_config",
    'given = config.attributes.get("connection")\nengine = engine_from_config',
)

ENV_USING_THE_GIVEN_URL = """
from alembic import context
from sqlalchemy import create_engine

config = context.config
with create_engine(config.get_main_option("sqlalchemy.url")).connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""


@pytest.mark.parametrize(
    ("env_py", "what", "where"),
    [
        (
            ENV_WITH_ITS_OWN_URL,
            "it makes its engine from a URL of its own (`create_engine(DATABASE_URL)`)",
            "migrations/env.py:7",
        ),
        (
            ENV_OVERRIDING_THE_URL,
            "it replaces the sqlalchemy.url pgharness sets with its own",
            "migrations/env.py:6",
        ),
        (ENV_USING_THE_GIVEN_CONNECTION, None, None),
        (ENV_USING_THE_GIVEN_URL, None, None),
        (
            ENV_OVERRIDING_THE_URL.replace("config.set_main_option", "# config.set_main_option"),
            None,
            None,
        ),
    ],
    ids=["own-url", "overrides-url", "given-connection", "given-url", "alembic-template"],
)
def test_an_env_py_that_migrates_another_database_is_a_problem(
    pytester: pytest.Pytester, env_py: str, what: str | None, where: str | None
) -> None:
    pytest.importorskip("alembic")
    pytester.makefile(".ini", pytest="[pytest]\npgharness_schema = alembic:alembic.ini\n")
    pytester.makefile(".ini", alembic=ALEMBIC_INI)
    pytester.mkdir("migrations")
    pytester.path.joinpath("migrations", "env.py").write_text(textwrap.dedent(env_py))
    result = doctor(pytester)
    out = result.stdout.str()
    if what is None:
        assert result.ret == 0, out
        assert "[alembic-env]" not in out
        return
    assert result.ret == 1, out
    assert "1. [alembic-env] env.py would migrate another database" in out
    assert what in out
    assert f"   where: {where}" in out
    assert 'config.attributes.get("connection")' in out


def test_a_missing_alembic_ini_is_a_settings_problem(pytester: pytest.Pytester) -> None:
    pytest.importorskip("alembic")
    pytester.makefile(".ini", pytest="[pytest]\npgharness_schema = alembic:nowhere.ini\n")
    result = doctor(pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["1. [[]settings[]] pgharness_schema = 'alembic:nowhere.ini': *"])


def test_console_script_reads_pyproject_of_the_rootdir(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myapp=HEALTHY_APP, test_app=ASYNC_TESTS)
    pytester.makefile(
        ".toml",
        pyproject="""
        [tool.pytest.ini_options]
        asyncio_mode = "strict"
        pgharness_schema = "myapp:Base"
        pgharness_sessionmakers = ["myapp:SessionLocal"]
        """,
    )
    # Run from elsewhere: --rootdir alone decides which project is examined.
    completed = subprocess.run(
        [sys.executable, "-m", "pgharness", "doctor", "--rootdir", str(pytester.path)],
        cwd=pytester.path.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    assert "settings: pyproject.toml" in completed.stdout
    assert "[unmarked-async-tests] 2 async tests would not run" in completed.stdout
    assert "   where: pyproject.toml" not in completed.stdout
    assert "[expire-on-commit] async sessionmaker `myapp:SessionLocal`" in completed.stdout


def test_console_script_without_a_command_shows_usage() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pgharness"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 2
    assert "doctor" in completed.stderr


def test_fixture_scope_default_puts_wider_async_fixtures_on_their_own_loops(
    pytester: pytest.Pytester,
) -> None:
    # asyncio_default_fixture_loop_scope = fixture-scope: each async fixture runs on a loop of
    # its own scope unless it names a loop_scope.
    pytester.makepyfile(
        conftest="""
        import pytest_asyncio


        @pytest_asyncio.fixture(scope="module")
        async def module_resource():
            yield


        @pytest_asyncio.fixture(scope="module", loop_scope="function")
        async def on_the_tests_loop():
            yield


        @pytest_asyncio.fixture
        async def per_test():
            yield
        """
    )
    pytester.makefile(
        ".ini",
        pytest="[pytest]\nasyncio_mode = auto\n"
        "asyncio_default_fixture_loop_scope = fixture-scope\n",
    )
    result = doctor(pytester)
    assert result.ret == 0
    out = result.stdout.str()
    assert "pgharness doctor: no problems found, 1 piece of advice (exit status 0)." in out
    assert (
        '[loop-scope] async fixture `module_resource` (scope="module") runs on a module-scoped'
        " loop while tests run on function-scoped loops" in out
    )
    assert "   where: conftest.py:5" in finding(out, "loop-scope")
    assert "on_the_tests_loop" not in out
    assert "per_test" not in out
