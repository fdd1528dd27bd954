"""Loop trouble explained: a connection from another loop, or one session used concurrently.

The projects reproduce the troubleshooting guide's attempt 1 (a session-scoped ``event_loop``
fixture, which pytest-asyncio >= 1.0 ignores, with a pooled engine), attempt 2 (``NullPool``
with a session-scoped async fixture) and an ``asyncio.gather`` over one ``AsyncSession``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _diagnostics_project import (
    INI,
    ODDITIES,
    ODDITIES_UNTOUCHED,
    pgharness_section,
    run,
    scratch_database,
    write_project,
)
from _isolation_project import make_project

# Attempt 2: a NullPool engine and a session-scoped async fixture on the session-scoped loop.
SHARED_SESSION_CONFTEST = """
    import pytest_asyncio
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine("DATABASE_URL", poolclass=NullPool)


    @pytest_asyncio.fixture(scope="session", loop_scope="session")
    async def shared_session():
        async with AsyncSession(engine) as session:
            await session.connection()
            yield session
"""


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


def test_pooled_engine_with_ignored_event_loop_fixture(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_project(
        pytester,
        database_url,
        conftest="""
            import asyncio

            import pytest
            import pytest_asyncio
            from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

            engine = create_async_engine("DATABASE_URL")


            @pytest.fixture(scope="session")
            def event_loop():
                loop = asyncio.new_event_loop()
                yield loop
                loop.close()


            @pytest_asyncio.fixture
            async def session():
                async with AsyncSession(engine) as session:
                    yield session
        """,
        test_queries="""
            from sqlalchemy import text


            async def test_first(session):
                assert await session.scalar(text("select 1")) == 1


            async def test_second(session):
                assert await session.scalar(text("select 2")) == 2


            async def test_third(session):
                assert await session.scalar(text("select 3")) == 3
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=2)
    # The originals are still shown...
    result.stdout.fnmatch_lines(["*got Future*attached to a different loop*"])
    result.stdout.fnmatch_lines(["*another operation is in progress*"])
    # ...each followed by its explanation.
    section = pgharness_section(result)
    assert "This test used a database connection that was opened on another event loop" in section
    assert "function-scoped loop" in section
    assert "engine `conftest:engine`" in section
    assert "pool AsyncAdaptedQueuePool" in section
    assert "`event_loop` fixture in conftest.py:" in section
    assert "pytest-asyncio >= 1.0 ignores it" in section
    assert "poolclass=NullPool" in section
    assert "await engine.dispose()" in section
    # The third test's "another operation is in progress" is the same trouble, not concurrency.
    assert "an earlier operation on this connection was cut off on its own loop" in section
    assert "test_queries.py:13" in section


def test_session_scoped_fixture_is_named_with_the_loop_scope_fix(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_project(
        pytester,
        database_url,
        conftest=SHARED_SESSION_CONFTEST,
        test_shared="""
            from sqlalchemy import text


            async def test_uses_the_shared_session(shared_session):
                assert await shared_session.scalar(text("select 1")) == 1
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*attached to a different loop*"])
    section = pgharness_section(result)
    assert (
        "Async fixture `shared_session` (scope=session) runs on the session-scoped loop" in section
    )
    assert "not on the test's function-scoped loop" in section
    assert "pool NullPool" in section
    assert '@pytest.mark.asyncio(loop_scope="session")' in section
    assert 'asyncio_default_test_loop_scope = "session"' in section
    assert '@pytest_asyncio.fixture(loop_scope="function")' in section


def test_gather_over_one_session_is_named_as_concurrent_use(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_project(
        pytester,
        database_url,
        conftest="""
            import pytest_asyncio
            from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
            from sqlalchemy.pool import NullPool

            engine = create_async_engine("DATABASE_URL", poolclass=NullPool)


            @pytest_asyncio.fixture
            async def session():
                async with AsyncSession(engine) as session:
                    yield session
        """,
        test_gather="""
            import asyncio
            from sqlalchemy import text


            async def count(session, n):
                return await session.scalar(text(f"select {n}"))


            async def test_counts_in_parallel(session):
                results = await asyncio.gather(count(session, 1), count(session, 2))
                assert results == [1, 2]
        """,
    )
    result = run(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*concurrent operations are not permitted*"])
    section = pgharness_section(result)
    assert "Two operations ran at the same time on one AsyncSession" in section
    assert "the AsyncSession `session` in test_counts_in_parallel()" in section
    assert "Concurrency started at test_gather.py:10:" in section
    assert "asyncio.gather(count(session, 1), count(session, 2))" in section
    assert "give each concurrent task its own session" in section


def test_cross_loop_error_names_the_fixture_on_the_other_loop(pytester: pytest.Pytester) -> None:
    make_project(pytester, "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function")
    pytester.makepyfile(
        """
        import pytest

        import myapp

        @pytest.fixture
        async def seeded(async_db):
            await myapp.create_user("seed@example.com")

        @pytest.mark.asyncio(loop_scope="module")
        async def test_on_the_module_loop(seeded):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*CrossLoopError*"])
    section = pgharness_section(result)
    assert 'The test runs on a module-scoped loop (@pytest.mark.asyncio(loop_scope="module"))' in (
        section
    )
    assert "`seeded` (scope=function, loop scope function)" in section
    assert '@pytest_asyncio.fixture(loop_scope="module")' in section


def test_busy_connection_from_a_fixture_on_an_open_loop_is_the_loop_trouble(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_project(
        pytester,
        database_url,
        conftest=SHARED_SESSION_CONFTEST,
        test_shared="""
            from sqlalchemy import text


            async def test_first(shared_session):
                assert await shared_session.scalar(text("select 1")) == 1


            async def test_second(shared_session):
                assert await shared_session.scalar(text("select 2")) == 2
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*InterfaceError*another operation is in progress*"])
    second = pgharness_section(result).split("This test used a database connection")[-1]
    # The session loop is still open: the busy connection is the other-loop trouble, not two
    # operations at once.
    assert "that was opened on another event loop" in second
    assert "another operation is in progress" in second
    assert "that loop is still open, so this is not two operations at once" in second
    assert "test_shared.py:9:" in second
    assert "Async fixture `shared_session` (scope=session) runs on the session-scoped loop" in (
        second
    )
    assert "Two operations ran at the same time" not in pgharness_section(result)


def test_a_tests_own_failure_quoting_the_text_gets_no_explanation(
    pytester: pytest.Pytester,
) -> None:
    pytester.makefile(".ini", pytest=INI)
    pytester.makepyfile(
        test_quotes="""
            import pytest


            def test_fails_with_the_text():
                pytest.fail("the log said: Future attached to a different loop")


            def test_asserts_on_the_text():
                assert not "cannot perform operation: another operation is in progress"


            def test_fails_while_handling_the_real_error():
                try:
                    raise RuntimeError("Task got Future <Future> attached to a different loop")
                except RuntimeError:
                    pytest.fail("the query failed")
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=3)
    section = pgharness_section(result)
    # Only the real RuntimeError (reached through __context__) is explained.
    assert section.count("opened on another event loop") == 1, section
    assert "Two operations ran at the same time" not in section
    assert "test_quotes.py:14" in section


def test_lost_savepoint_of_interleaved_sessions_is_explained(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_project(
        pytester,
        database_url,
        test_interleaved="""
            import asyncio

            from sqlalchemy import text
            from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
            from sqlalchemy.pool import NullPool


            async def test_two_sessions_on_one_connection():
                engine = create_async_engine("DATABASE_URL", poolclass=NullPool)
                first_open, second_open, first_closing = (asyncio.Event() for _ in range(3))
                async with engine.connect() as connection, connection.begin():

                    async def first():
                        async with AsyncSession(
                            bind=connection, join_transaction_mode="create_savepoint"
                        ) as session:
                            await session.execute(text("select 1"))
                            first_open.set()
                            await second_open.wait()
                            first_closing.set()

                    async def second():
                        await first_open.wait()
                        async with AsyncSession(
                            bind=connection, join_transaction_mode="create_savepoint"
                        ) as session:
                            await session.execute(text("select 2"))
                            second_open.set()
                            await first_closing.wait()

                    await asyncio.gather(first(), second())
                await engine.dispose()
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*savepoint*does not exist*"])
    section = pgharness_section(result)
    assert "A session ended a savepoint that was already gone" in section
    assert "two sessions worked on one connection at the same time" in section
    assert '@pytest.mark.pg_isolation("database")' in section


def test_anyio_fixture_of_a_test_pytest_asyncio_runs_is_named_with_the_mode_fix(
    pytester: pytest.Pytester,
) -> None:
    # Under auto mode pytest-asyncio runs the anyio-marked test, and anyio's plugin (here its
    # fixture hook wraps pytest-asyncio's: registered last) runs the async fixture elsewhere.
    make_project(pytester, "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function")
    pytester.makepyfile(
        """
        import pytest

        import myapp

        pytestmark = pytest.mark.anyio


        @pytest.fixture
        def anyio_backend():
            return "asyncio"


        @pytest.fixture
        async def seeded(async_db):
            await myapp.create_user("seed@example.com")


        async def test_sees_the_seeded_user(seeded, async_db):
            assert await myapp.count_users() == 1
        """
    )
    result = pytester.runpytest("-p", "no:randomly", "-p", "asyncio", "-p", "anyio")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*CrossLoopError*pytest-asyncio function-scoped loop*"])
    section = pgharness_section(result)
    assert "The test runs on a pytest-asyncio function-scoped loop" in section
    assert "asyncio_mode = auto makes pytest-asyncio run @pytest.mark.anyio tests" in section
    assert "`seeded` (scope=function, run by anyio's plugin on the anyio test runner loop)" in (
        section
    )
    assert "set `asyncio_mode = strict`" in section
    assert "drop @pytest.mark.anyio" in section


ODD_GLOBALS_APP = """
    from sqlalchemy.ext.asyncio import create_async_engine

    from oddities import Unanswerable, cdll, mock, unanswerable  # noqa: F401

    engine = create_async_engine("DATABASE_URL")
"""

# A session-scoped fixture pools a connection made on the session-scoped loop.
SESSION_ENGINE_CONFTEST = """
    import pytest_asyncio
    from sqlalchemy import text

    import app


    @pytest_asyncio.fixture(scope="session", loop_scope="session")
    async def engine():
        async with app.engine.connect() as connection:
            await connection.execute(text("select 1"))
        return app.engine
"""


def test_loop_trouble_is_explained_whatever_the_modules_hold(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_project(
        pytester,
        database_url,
        oddities=ODDITIES,
        app=ODD_GLOBALS_APP,
        conftest=SESSION_ENGINE_CONFTEST,
        test_odd="""
            from sqlalchemy import text


            async def test_uses_the_session_engine(engine):
                async with engine.connect() as connection:
                    assert await connection.scalar(text("select 1")) == 1
        """,
        test_oddities_untouched=ODDITIES_UNTOUCHED,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    # The test's own error and traceback, then the explanation.
    result.stdout.fnmatch_lines(
        [
            '>*assert await connection.scalar(text("select 1")) == 1',
            "*RuntimeError*attached to a different loop*",
        ]
    )
    section = pgharness_section(result)
    assert "could not explain" not in section
    assert "This test used a database connection that was opened on another event loop" in section
    assert "engine `app:engine`" in section
    assert "Async fixture `engine` (scope=session) runs on the session-scoped loop" in section
    assert "test_odd.py:6:" in section


def test_an_explanation_that_fails_leaves_the_tests_error_as_it_was(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_project(
        pytester,
        database_url,
        oddities=ODDITIES,
        app=ODD_GLOBALS_APP,
        conftest=SESSION_ENGINE_CONFTEST,
        test_broken="""
            from sqlalchemy import text
            from sqlalchemy.engine import URL


            def broken(*args, **kwargs):
                raise LookupError("a library broke while the failure was explained")


            async def test_uses_the_session_engine(engine, monkeypatch):
                # Still patched when the failure is reported (before the test's teardown).
                monkeypatch.setattr(URL, "render_as_string", broken)
                async with engine.connect() as connection:
                    assert await connection.scalar(text("select 1")) == 1
        """,
        test_oddities_untouched=ODDITIES_UNTOUCHED,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "INTERNALERROR" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            '>*assert await connection.scalar(text("select 1")) == 1',
            "test_broken.py:13: ",
            "E   RuntimeError:*attached to a different loop",
            "*: RuntimeError",
            "*- pgharness -*",
        ]
    )
    section = pgharness_section(result)
    assert section.strip() == (
        "(pgharness could not explain this failure: LookupError: a library broke while the"
        " failure was explained; the error above is the test's own)"
    )


def test_an_exception_that_cannot_be_printed_is_reported_as_pytest_reports_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makefile(".ini", pytest=INI)
    pytester.makepyfile(
        test_unprintable="""
            class Unprintable(RuntimeError):
                def __str__(self):
                    raise ValueError("no text for this one")


            def test_raises_it():
                raise Unprintable()
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    assert "INTERNALERROR" not in result.stdout.str()
    result.stdout.fnmatch_lines([">*raise Unprintable()", "*test_unprintable.py:7: Unprintable"])
    assert pgharness_section(result) == ""


def test_pooled_engine_across_anyio_tests_names_anyios_loop(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_project(
        pytester,
        database_url,
        test_anyio="""
            import pytest
            from sqlalchemy import text
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine("DATABASE_URL")
            pytestmark = pytest.mark.anyio


            @pytest.fixture
            def anyio_backend():
                return "asyncio"


            async def test_first():
                async with engine.connect() as connection:
                    assert await connection.scalar(text("select 1")) == 1


            async def test_second():
                async with engine.connect() as connection:
                    assert await connection.scalar(text("select 2")) == 2
        """,
    )
    pytester.makefile(
        ".ini",
        pytest="[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n",
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    section = pgharness_section(result)
    assert "This test used a database connection that was opened on another event loop" in section
    assert "anyio's plugin runs this test on its test runner loop (@pytest.mark.anyio)" in section
    assert "engine `test_anyio:engine`" in section
    assert "poolclass=NullPool" in section
    # pytest-asyncio's loop scopes do not choose an anyio test's loop: no advice about them.
    assert "loop_scope" not in section
