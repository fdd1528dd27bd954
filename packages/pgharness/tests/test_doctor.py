"""The doctor: ``pytest --pg-doctor`` and ``pgharness doctor`` find the guide's set-ups."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

TROUBLED_APP = textwrap.dedent(
    """
    from sqlalchemy import ForeignKey, String
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


    class Base(DeclarativeBase):
        pass


    class Provider(Base):
        __tablename__ = "provider"
        id: Mapped[int] = mapped_column(primary_key=True)
        token: Mapped["Token"] = relationship(back_populates="provider")


    class Token(Base):
        __tablename__ = "token"
        id: Mapped[int] = mapped_column(primary_key=True)
        provider_id: Mapped[int] = mapped_column(ForeignKey("provider.id"))
        value: Mapped[str] = mapped_column(String(50))
        provider: Mapped[Provider] = relationship(back_populates="token", lazy="raise")


    engine = create_async_engine("postgresql+asyncpg://app@db.invalid/app")
    SessionLocal = async_sessionmaker(engine)
    """
)

TROUBLED_CONFTEST = textwrap.dedent(
    """
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
    """
)

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = {fixture_scope}
pgharness_schema = myapp:Base
pgharness_sessionmakers = myapp:SessionLocal
"""


def troubled_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myapp=TROUBLED_APP, conftest=TROUBLED_CONFTEST)
    pytester.makefile(".ini", pytest=INI.format(fixture_scope="session"))
    pytester.makepyfile(test_never_run="def test_never_run():\n    raise AssertionError\n")


def test_doctor_reports_every_finding_with_its_fix(pytester: pytest.Pytester) -> None:
    troubled_project(pytester)
    result = pytester.runpytest_subprocess("--pg-doctor", "-p", "no:randomly")
    assert result.ret == 1
    out = result.stdout.str()
    assert "pgharness doctor: 6 findings" in out
    # Default lazy loading, named per relationship (lazy="raise" is fine).
    assert "[lazy-loading] 1 relationship(s) use the default lazy loading" in out
    assert "Provider.token" in out
    assert "Token.provider" not in out
    assert "selectinload(Model.rel)" in out
    # The async sessionmaker's expire_on_commit.
    assert "[expire-on-commit] async sessionmaker `myapp:SessionLocal`" in out
    assert "async_sessionmaker(engine, expire_on_commit=False)" in out
    # Loop scopes that split fixtures and tests.
    assert 'asyncio_default_fixture_loop_scope = "session" but' in out
    assert "async fixture `tables` (conftest.py:" in out
    # The ignored event_loop fixture.
    assert "[event-loop-fixture] conftest.py:8 defines an `event_loop` fixture" in out
    assert "ignores it" in out
    # The pooled engine created at import, and what rebinding covers.
    assert "[pooled-engine] engine `myapp:engine` is created at import time" in out
    assert "pgharness rebinds `myapp:SessionLocal`" in out
    assert "poolclass=NullPool" in out
    # No test ran.
    assert "test_never_run" not in out
    assert "passed" not in out
    assert "failed" not in out


def test_doctor_is_quiet_and_exits_zero_on_a_sound_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        myapp="""
        from sqlalchemy import ForeignKey
        from sqlalchemy.ext.asyncio import AsyncAttrs, async_sessionmaker, create_async_engine
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
        from sqlalchemy.pool import NullPool


        class Base(AsyncAttrs, DeclarativeBase):
            pass


        class Parent(Base):
            __tablename__ = "parent"
            id: Mapped[int] = mapped_column(primary_key=True)
            children: Mapped[list["Child"]] = relationship(lazy="selectin")


        class Child(Base):
            __tablename__ = "child"
            id: Mapped[int] = mapped_column(primary_key=True)
            parent_id: Mapped[int] = mapped_column(ForeignKey("parent.id"))


        engine = create_async_engine("postgresql+asyncpg://app@db.invalid/app", poolclass=NullPool)
        SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
        """
    )
    pytester.makefile(".ini", pytest=INI.format(fixture_scope="function"))
    result = pytester.runpytest_subprocess("--pg-doctor", "-p", "no:randomly")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["pgharness doctor: no problems found."])


def test_doctor_names_a_sessionmaker_left_out_of_the_settings(pytester: pytest.Pytester) -> None:
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
    pytester.makefile(".ini", pytest="[pytest]\npgharness_schema = myapp:Base\n")
    result = pytester.runpytest_subprocess("--pg-doctor", "-p", "no:randomly")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*[[]unconfigured-sessionmaker[]] `myapp:SessionLocal` is not named in "
            "pgharness_sessionmakers*",
            '*fix: pgharness_sessionmakers = [[]"myapp:SessionLocal"[]] in '
            "[[]tool.pytest.ini_options[]].",
        ]
    )


def test_doctor_reports_an_unimportable_setting(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".ini",
        pytest="[pytest]\npgharness_sessionmakers = nowhere.db:SessionLocal\n",
    )
    result = pytester.runpytest_subprocess("--pg-doctor", "-p", "no:randomly")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*[[]settings[]] pgharness_sessionmakers = 'nowhere.db:*"])


def test_console_script_reads_pyproject_of_the_rootdir(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myapp=TROUBLED_APP, conftest=TROUBLED_CONFTEST)
    pytester.makefile(
        ".toml",
        pyproject="""
        [tool.pytest.ini_options]
        asyncio_mode = "auto"
        asyncio_default_fixture_loop_scope = "function"
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
    assert "[expire-on-commit] async sessionmaker `myapp:SessionLocal`" in completed.stdout
    assert "[event-loop-fixture] conftest.py:8" in completed.stdout
    assert "async fixture `tables`" in completed.stdout
    assert "asyncio_default_fixture_loop_scope = " not in completed.stdout


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
    result = pytester.runpytest_subprocess("--pg-doctor", "-p", "no:randomly")
    assert result.ret == 1
    out = result.stdout.str()
    assert "pgharness doctor: 1 finding" in out
    assert (
        'async fixture `module_resource` (conftest.py:5, scope="module") runs on a module-scoped'
        " loop while tests run on function-scoped loops" in out
    )
    assert "on_the_tests_loop" not in out
    assert "per_test" not in out
