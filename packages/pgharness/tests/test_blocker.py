# ruff: noqa: E501  (test sources embedded as strings are easier to read unwrapped)
"""Nothing escapes: while pgharness is active, no connection reaches a database it did not make.

Every project here points the app's settings at the developer's own database (a real database
on the machine's server, with the app's tables, so an escaping write would succeed there), and
every test ends by checking it holds no row and no new table. Each case either passes with
isolation or fails with a message naming the URL (password masked), what opened it and the fix.
"""

from __future__ import annotations

import pytest
from _isolation_project import APP, make_project
from conftest import DeveloperDatabase, metadata_of

ASYNC = """
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""

PRODUCTION_URL = "postgresql+asyncpg://app@db.invalid:5432/production"

ESCAPES = """
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

import myapp


async def write_through_a_session_of_its_own(email):
    async with AsyncSession(bind=myapp.engine) as session:
        session.add(myapp.User(email=email))
        await session.commit()


@myapp.app.post("/swallowed", status_code=201)
async def post_swallowed(body: dict):
    try:
        await write_through_a_session_of_its_own(body["email"])
    except Exception:
        return {"saved": False}  # an app that hides its errors
    return {"saved": True}
"""


def _project(
    pytester: pytest.Pytester, dev: DeveloperDatabase, ini: str = ASYNC, app: str = APP
) -> None:
    make_project(pytester, ini, app=app.replace(PRODUCTION_URL, dev.url) + ESCAPES)
    dev.create_tables(metadata_of(APP))


def test_every_way_out_is_blocked_with_its_fix(
    project: pytest.Pytester, developer_database: DeveloperDatabase, server_args: list[str]
) -> None:
    dev = developer_database
    _project(project, dev)
    project.makepyfile(
        test_escapes=f"""
        import asyncio

        import asyncpg
        import psycopg
        import pytest
        from sqlalchemy import text

        import myapp

        DEV = {dev.libpq_url!r}


        @pytest.fixture(scope="module")
        def seeded_for_the_module():
            asyncio.run(myapp.create_user("module@example.com"))


        async def test_a_session_bound_to_the_engine(async_db):
            await myapp.write_through_a_session_of_its_own("direct@example.com")


        async def test_raw_asyncpg(async_db):
            await asyncpg.connect(DEV)


        def test_raw_psycopg(db):
            psycopg.connect(DEV)


        def test_a_module_scoped_fixture_writing_through_the_sessionmaker(seeded_for_the_module, db):
            pass


        async def test_an_app_that_swallows_the_error(async_client):
            response = await async_client.post("/swallowed", json={{"email": "s@example.com"}})
            assert response.json() == {{"saved": False}}


        async def test_the_configured_sessionmaker_is_isolated(async_client):
            response = await async_client.post("/users", json={{"email": "ok@example.com"}})
            assert response.status_code == 201
        """
    )
    result = project.runpytest(*server_args, "-p", "no:randomly", "-rfE")
    out = result.stdout.str()
    result.assert_outcomes(passed=2, failed=3, errors=2)
    # The direct session: the engine is named, and what to do instead.
    result.stdout.fnmatch_lines(
        [
            "*pgharness stopped a connection to postgresql://postgres@127.0.0.1:5432/devdb_*",
            "*Opened by: the engine myapp:engine.",
            "*From: myapp.py:* in write_through_a_session_of_its_own <- test_escapes.py:* in test_a_session_bound_to_the_engine.",
            "*Fix: pgharness rebinds the app's sessionmakers, never its engines*",
        ]
    )
    assert "Opened by: asyncpg.connect()." in out
    assert "Opened by: psycopg.connect()." in out
    # The module-scoped fixture: the sessionmaker is configured, but used outside a test.
    result.stdout.fnmatch_lines(
        ["*Opened by: the sessionmaker myapp:SessionLocal, through the engine myapp:engine.*"]
    )
    assert "this connection was opened outside one" in out
    # The swallowed error still fails the test, at teardown.
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_an_app_that_swallows_the_error*",
            "test_escapes.py::test_an_app_that_swallows_the_error: pgharness stopped a connection*",
        ]
    )
    dev.assert_untouched()


def test_a_forgotten_sessionmakers_setting_names_the_line_to_add(
    project: pytest.Pytester, developer_database: DeveloperDatabase, server_args: list[str]
) -> None:
    dev = developer_database
    _project(project, dev)
    ini = project.path / "pytest.ini"
    ini.write_text(ini.read_text().replace("pgharness_sessionmakers = myapp:SessionLocal\n", ""))
    project.makepyfile(
        """
        async def test_register(async_client):
            response = await async_client.post("/users", json={"email": "a@example.com"})
            assert response.status_code == 201

        def test_register_sync(client):
            assert client.post("/users", json={"email": "b@example.com"}).status_code == 201
        """
    )
    result = project.runpytest(*server_args, "-p", "no:randomly")
    assert result.ret != 0
    out = result.stdout.str()
    assert out.count('    pgharness_sessionmakers = ["myapp:SessionLocal"]') >= 2, out
    assert "is not among them" in out
    dev.assert_untouched()


def test_a_sessionmaker_rebound_by_the_lifespan_is_caught(
    project: pytest.Pytester, developer_database: DeveloperDatabase
) -> None:
    dev = developer_database
    app = APP.replace(
        "app.state.users_at_startup = await count_users()",
        "SessionLocal.configure(bind=engine)\n    app.state.users_at_startup = await count_users()",
    )
    _project(project, dev, app=app)
    project.makepyfile(
        """
        async def test_register(async_client):
            await async_client.post("/users", json={"email": "a@example.com"})
        """
    )
    result = project.runpytest("-p", "no:randomly")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*the app bound it to its engine again during the test*"])
    dev.assert_untouched()


def test_an_engine_made_in_the_lifespan_is_blocked(
    project: pytest.Pytester, developer_database: DeveloperDatabase
) -> None:
    dev = developer_database
    app = APP.replace(
        "app.state.users_at_startup = await count_users()",
        "own = create_async_engine(engine.url)\n"
        "    async with own.begin() as conn:\n"
        "        await conn.execute(User.__table__.insert().values(email='lifespan@example.com'))\n"
        "    app.state.users_at_startup = 0",
    )
    _project(project, dev, app=app)
    project.makepyfile(
        """
        def test_health(client):
            pass
        """
    )
    result = project.runpytest("-p", "no:randomly")
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        [
            "*pgharness stopped a connection to *devdb_*",
            "*Opened by: a SQLAlchemy engine no module global holds*",
            "*From: myapp.py:* in lifespan*",
        ]
    )
    dev.assert_untouched()


def test_allowed_urls_are_reached_and_passwords_never_shown(
    project: pytest.Pytester, developer_database: DeveloperDatabase, admin: object
) -> None:
    dev = developer_database
    make_project(project, ASYNC + f"pgharness_allow_urls = {dev.libpq_url}")
    project.makepyfile(
        f"""
        import psycopg
        import pytest

        from pgharness import UnmanagedDatabaseError

        def test_the_allowed_database(db):
            with psycopg.connect({dev.libpq_url!r}) as conn:
                assert conn.execute("select current_database()").fetchone()[0] == {dev.name!r}

        def test_another_one_is_blocked_and_its_password_masked(db):
            with pytest.raises(UnmanagedDatabaseError) as caught:
                psycopg.connect("postgresql://app:s3cr3t-pw@127.0.0.1:5432/other_db")
            assert "s3cr3t-pw" not in str(caught.value)
            assert "postgresql://app@127.0.0.1:5432/other_db" in str(caught.value)
        """
    )
    result = project.runpytest("-p", "no:randomly", "-rfE")
    # The second test caught the error itself: the blocked attempt still fails it at teardown.
    result.assert_outcomes(passed=2, errors=1)
    assert "s3cr3t-pw" not in result.stdout.str() + result.stderr.str()


def test_drivers_bound_before_pgharness_started_are_blocked_too(
    pytester: pytest.Pytester, developer_database: DeveloperDatabase
) -> None:
    """``from asyncpg import connect``, psycopg's ``connect`` taken by name: bound while
    conftest.py loads, before any pgharness hook could be (asyncpg pools keep the ``connect``
    of the moment they are made the same way)."""
    dev = developer_database
    _project(pytester, dev)
    pytester.makepyfile(
        early=f"""
        from asyncpg import connect as asyncpg_connect
        from psycopg import AsyncConnection, connect as psycopg_connect

        DEV = {dev.libpq_url!r}
        AsyncConnect = AsyncConnection.connect
        """
    )
    pytester.makeconftest("import early\n")
    pytester.makepyfile(
        test_early="""
        import early


        async def test_asyncpg_connect_by_name(async_db):
            await early.asyncpg_connect(early.DEV)


        def test_psycopg_connect_by_name(db):
            early.psycopg_connect(early.DEV)


        async def test_psycopg_async_connect_by_name(async_db):
            await early.AsyncConnect(early.DEV)
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    stopped = [
        line
        for line in result.outlines
        if line.startswith("E ")
        and "UnmanagedDatabaseError: pgharness stopped a connection" in line
    ]
    assert len(stopped) == 3, out
    assert "Opened by: asyncpg.connect()." in out
    assert "Opened by: psycopg.connect()." in out
    assert "Opened by: psycopg.AsyncConnection.connect()." in out
    dev.assert_untouched()


def test_a_driver_first_imported_after_pgharness_started_is_hooked_as_it_loads(
    unforked: pytest.Pytester, developer_database: DeveloperDatabase
) -> None:
    """In a new process psycopg is not imported yet when the blocker goes on (before the first
    conftest.py loads): it is hooked the moment something imports it (pgharness's own server
    connection, or the test), and the test's connection to the developer's database stops."""
    dev = developer_database
    _project(unforked, dev)
    unforked.makeconftest(
        """
        import sys

        assert "psycopg" not in sys.modules, "psycopg was imported before the blocker went on"
        """
    )
    unforked.makepyfile(
        test_late=f"""
        def test_psycopg_imported_by_the_test(db):
            import psycopg

            psycopg.connect({dev.libpq_url!r})
        """
    )
    result = unforked.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "UnmanagedDatabaseError: pgharness stopped a connection" in out, out
    assert "Opened by: psycopg.connect()." in out
    dev.assert_untouched()


def test_a_connection_made_while_conftest_imports_the_app_is_blocked(
    pytester: pytest.Pytester, developer_database: DeveloperDatabase
) -> None:
    """An app that creates its tables when imported (a common tutorial set-up), imported by
    conftest.py: the blocker is on before the first conftest loads, so nothing reaches the
    developer's database and the run stops saying where it happened."""
    dev = developer_database
    make_project(
        pytester,
        ASYNC,
        app=APP.replace(PRODUCTION_URL, dev.url)
        + f"""
from sqlalchemy import create_engine

Base.metadata.create_all(create_engine({dev.sync_url!r}))
""",
    )
    pytester.makeconftest("import myapp\n")
    pytester.makepyfile(test_one="def test_one(db):\n    pass\n")
    result = pytester.runpytest("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    out = "\n".join(result.outlines + result.errlines)
    assert "pgharness stopped a connection to postgresql://postgres@127.0.0.1:5432/devdb_" in out
    assert "From: myapp.py:" in out
    assert "conftest.py:1 in <module>" in out
    dev.assert_untouched()


def test_a_run_activated_by_its_fixtures_alone_stops_if_code_connected_before(
    pytester: pytest.Pytester, developer_database: DeveloperDatabase
) -> None:
    """No pgharness setting at all: pgharness becomes active only when collection shows a test
    using its fixtures, after the test modules were imported. An app that wrote to the
    developer's database at import cannot be stopped then, but the run must not pass: it stops
    naming the connection, where it came from, and the setting that would have prevented it."""
    dev = developer_database
    pytester.makepyfile(
        myapp=f"""
        import asyncpg

        DEV = {dev.libpq_url!r}


        async def create_tables():
            connection = await asyncpg.connect(DEV)
            await connection.execute("CREATE TABLE IF NOT EXISTS imported (id int)")
            await connection.close()
        """
    )
    pytester.makepyfile(
        test_app="""
        import asyncio

        import myapp

        asyncio.run(myapp.create_tables())


        def test_uses_pgharness(db):
            pass
        """
    )
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    out = "\n".join(result.outlines + result.errlines)
    assert "pgharness stopped the run: before it became active" in out
    assert f"{dev.name}, opened by asyncpg.connect(), from myapp.py:" in out
    assert "test_app.py:5 in <module>" in out
    assert "pgharness_sessionmakers" in out
    assert "passed" not in result.outlines[-1]
    assert dev.tables() == ["public.imported"]  # the write could not be stopped, only reported

    # The same import in a run whose tests never use pgharness: pgharness stays out of it.
    pytester.makepyfile(
        test_app=pytester.path.joinpath("test_app.py").read_text().replace("(db)", "()")
    )
    quiet = pytester.runpytest("-p", "no:randomly")
    quiet.assert_outcomes(passed=1)
    assert "pgharness stopped" not in quiet.stdout.str()


def test_engines_whose_creator_calls_psycopg2_or_pg8000_are_blocked(
    pytester: pytest.Pytester, developer_database: DeveloperDatabase
) -> None:
    """``create_engine(..., creator=...)`` hands SQLAlchemy a connection it did not open, so its
    connect event never sees where it goes: the drivers themselves are hooked."""
    dev = developer_database
    _project(pytester, dev)
    host, port = "127.0.0.1", int(dev.libpq_url.rsplit(":", 1)[1].split("/")[0])
    pytester.makepyfile(
        test_creators=f"""
        import pg8000.native
        import psycopg2
        from sqlalchemy import create_engine, text

        psycopg2_engine = create_engine(
            "postgresql+psycopg2://", creator=lambda: psycopg2.connect({dev.libpq_url!r})
        )
        pg8000_engine = create_engine(
            "postgresql+pg8000://",
            creator=lambda: pg8000.dbapi.connect(
                user="postgres", host={host!r}, port={port}, database={dev.name!r}
            ),
        )


        def test_psycopg2_creator(db):
            with psycopg2_engine.begin() as connection:
                connection.execute(text("INSERT INTO users (email) VALUES ('a@example.com')"))


        def test_pg8000_creator(db):
            with pg8000_engine.begin() as connection:
                connection.execute(text("INSERT INTO users (email) VALUES ('b@example.com')"))


        def test_pg8000_native(db):
            pg8000.native.Connection("postgres", host={host!r}, port={port}, database={dev.name!r})
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    assert (
        out.count(
            f"pgharness stopped a connection to postgresql://postgres@127.0.0.1:{port}/{dev.name}"
        )
        >= 3
    )
    assert "Opened by: psycopg2.connect()." in out
    assert "Opened by: pg8000.connect()." in out
    dev.assert_untouched()
