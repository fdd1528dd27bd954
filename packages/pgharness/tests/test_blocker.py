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
