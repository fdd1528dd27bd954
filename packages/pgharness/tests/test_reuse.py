# ruff: noqa: E501  (test sources embedded as strings are easier to read unwrapped)
"""Consecutive tests on one event loop reuse one connection, and nothing carries from one to
the next: session state, a statement left running, an aborted or broken connection."""

from __future__ import annotations

import gc
import time
import warnings

import psycopg
import pytest
from _isolation_project import make_project
from conftest import EXTERNAL_URL

PG_URL = f"--pg-url={EXTERNAL_URL}"

# Warnings that would show a connection closed late or on a dead loop fail the inner run.
STRICT_WARNINGS = """
filterwarnings =
    error::pytest.PytestUnraisableExceptionWarning
    error::ResourceWarning
"""


@pytest.fixture(autouse=True)
def _earlier_runs_garbage_collected() -> None:
    """The inner runs below are in-process and fail on a ResourceWarning. What an earlier
    in-process run of this worker left to the garbage collector (an inner project's engine
    never disposed, its pooled connection still open) is collected first, not charged to them.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def loop_ini(scope: str) -> str:
    return (
        f"asyncio_mode = auto\nasyncio_default_fixture_loop_scope = {scope}\n"
        f"asyncio_default_test_loop_scope = {scope}\n" + STRICT_WARNINGS
    )


# Each test writes "label pid" to pids.txt; the outer test compares them.
RECORD = """
import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import myapp

PIDS = Path(__file__).with_name("pids.txt")
state = {}


def record(label, pid):
    with PIDS.open("a") as out:
        out.write(f"{label} {pid}\\n")


async def pid_of(session):
    return await session.scalar(text("select pg_backend_pid()"))


async def assert_clean(session):
    connection = await session.connection()

    async def rows(sql):
        return [tuple(row) for row in (await connection.execute(text(sql))).all()]

    assert await rows("select name from pg_settings where source = 'session'") == []
    assert await rows("select objid from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()") == []
    assert await rows("select pg_listening_channels()") == []
    assert await rows("select relname from pg_class where relnamespace = pg_my_temp_schema()") == []
    assert await rows("select name from pg_prepared_statements where from_sql") == []
    assert await rows("select name from pg_cursors where name <> ''") == []
    assert await connection.scalar(text("select current_user = session_user")) is True
    assert await rows("select gid from pg_prepared_xacts where database = current_database()") == []
"""

ASYNC_CARRY_OVER = (
    RECORD
    + """

async def test_leaves_session_state_inside_its_transaction(async_db):
    record("settings", await pid_of(async_db))
    connection = await async_db.connection()
    await connection.execute(text("SET work_mem = '7MB'"))
    await connection.execute(text("SELECT set_config('application_name', 'leaked', false)"))
    await connection.execute(text("SELECT pg_advisory_lock(4242)"))
    await connection.execute(text("LISTEN leaked_channel"))
    await connection.execute(text("CREATE TEMP TABLE leaked_temp (x int)"))
    await connection.execute(text("PREPARE leaked_statement AS SELECT 1"))
    await myapp.create_user("a@example.com")
    await connection.execute(text("SELECT currval('users_id_seq')"))


async def test_finds_none_of_it(async_db):
    record("settings_after", await pid_of(async_db))
    await assert_clean(async_db)
    connection = await async_db.connection()
    await connection.execute(text("PREPARE leaked_statement AS SELECT 2"))  # the name is free
    # SQLAlchemy's own prepared statements are still there for the next statements.
    assert await connection.scalar(text("select count(*) from pg_prepared_statements where not from_sql")) > 0
    assert await myapp.count_users() == 0
    with pytest.raises(DBAPIError, match="not yet defined in this session"):
        await connection.execute(text("SELECT currval('users_id_seq')"))


async def test_uses_the_driver_connection_outside_the_transaction(async_db):
    driver = (await myapp.SessionLocal.kw["bind"].get_raw_connection()).driver_connection
    await driver.execute(
        "SET statement_timeout = 4321; SET ROLE pg_monitor; LISTEN raw_channel; "
        "CREATE TEMP TABLE raw_temp (x int); PREPARE raw_statement AS SELECT 1; "
        "SELECT pg_advisory_lock(77); DECLARE raw_cursor CURSOR WITH HOLD FOR SELECT 1"
    )
    record("driver", await pid_of(async_db))


async def test_finds_none_of_that_either(async_db):
    record("driver_after", await pid_of(async_db))
    await assert_clean(async_db)


async def test_tries_to_prepare_its_transaction(async_db):
    from pgharness import IsolationError

    await myapp.create_user("prepared@example.com")
    connection = await async_db.connection()
    with pytest.raises(IsolationError, match="would end the test's outer transaction"):
        await connection.execute(text("PREPARE TRANSACTION 'pgharness_test'"))


async def test_after_a_refused_prepare_transaction(async_db):
    await assert_clean(async_db)
    assert await myapp.count_users() == 0


async def test_leaves_its_transaction_aborted(async_db):
    record("aborted", await pid_of(async_db))
    connection = await async_db.connection()
    with pytest.raises(DBAPIError, match="division by zero"):
        await connection.execute(text("SELECT 1/0"))


async def test_after_an_aborted_transaction(async_db):
    record("aborted_after", await pid_of(async_db))
    await myapp.create_user("b@example.com")
    assert await myapp.count_users() == 1


async def test_gives_up_on_a_statement_still_running(async_db):
    connection = await async_db.connection()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(connection.execute(text("SELECT pg_sleep(60)")), 0.3)
    state["given_up"] = time.monotonic()


async def test_after_a_cancelled_statement(async_db):
    assert time.monotonic() - state["given_up"] < 20  # the statement was not waited for
    await assert_clean(async_db)
    assert await myapp.count_users() == 0


async def test_breaks_its_connection(async_db):
    record("broken", await pid_of(async_db))
    connection = await async_db.connection()
    with pytest.raises(DBAPIError):
        await connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))


async def test_after_a_broken_connection(async_db):
    record("broken_after", await pid_of(async_db))
    assert await myapp.count_users() == 0


async def test_registers_a_listener_on_the_driver_connection(async_db):
    driver = (await myapp.SessionLocal.kw["bind"].get_raw_connection()).driver_connection
    await driver.add_listener("driver_channel", lambda *args: None)
    record("listener", await pid_of(async_db))


async def test_after_a_listener(async_db):
    record("listener_after", await pid_of(async_db))
    await assert_clean(async_db)
"""
)

DEF_CARRY_OVER = (
    RECORD
    + """

def test_def_leaves_session_state(db):
    record("def", db.scalar(text("select pg_backend_pid()")))
    db.execute(text("SET work_mem = '7MB'"))
    db.execute(text("SELECT pg_advisory_lock(4343)"))
    db.execute(text("PREPARE def_statement AS SELECT 1"))
    db.add(myapp.User(email="c@example.com"))
    db.commit()


def test_def_finds_none_of_it(db, client):
    record("def_after", db.scalar(text("select pg_backend_pid()")))
    assert db.execute(text("select name from pg_settings where source = 'session'")).all() == []
    assert db.scalar(text("select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()")) == 0
    assert db.scalar(text("select count(*) from pg_prepared_statements where from_sql")) == 0
    assert client.get("/users/count").json() == {"count": 0}
"""
)


def _pids(project: pytest.Pytester) -> dict[str, int]:
    lines = (project.path / "pids.txt").read_text().splitlines()
    return {label: int(pid) for label, pid in (line.split() for line in lines)}


def _assert_closed(pids: dict[str, int]) -> None:
    """None of the inner run's connections is still open on the server (a backend ends a
    moment after its client closed the connection)."""
    with psycopg.connect(EXTERNAL_URL, autocommit=True) as admin:
        for _ in range(100):
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids.values()),)
            ).fetchall()
            if not rows:
                break
            time.sleep(0.05)
    assert rows == []


@pytest.mark.parametrize("scope", ["session", "module"])
def test_tests_on_one_loop_share_a_connection_and_nothing_carries_over(
    pytester: pytest.Pytester, scope: str
) -> None:
    make_project(pytester, loop_ini(scope))
    pytester.makepyfile(test_async_carry=ASYNC_CARRY_OVER, test_def_carry=DEF_CARRY_OVER)
    result = pytester.runpytest(PG_URL, "-p", "no:randomly")
    result.assert_outcomes(passed=16)
    assert "Event loop is closed" not in result.stdout.str()
    pids = _pids(pytester)
    # One connection for the async tests on their loop, rolled back and reset between tests.
    assert pids["settings"] == pids["settings_after"] == pids["driver"] == pids["driver_after"]
    assert pids["driver_after"] == pids["aborted"] == pids["aborted_after"]
    # A broken connection, or one whose driver object the test changed, is not reused.
    assert pids["broken_after"] != pids["broken"]
    assert pids["listener_after"] != pids["listener"]
    # def tests share the connection of the harness's loop thread, a loop of its own.
    assert pids["def"] == pids["def_after"] != pids["settings"]
    _assert_closed(pids)


SECOND_MODULE = (
    RECORD
    + """

async def test_first_of_another_module(async_db):
    record("other", await pid_of(async_db))


async def test_second_of_another_module(async_db):
    record("other_after", await pid_of(async_db))
    first = dict(line.split() for line in PIDS.read_text().splitlines())["first"]
    for _ in range(100):  # the server ends the backend a moment after the client left
        if not await async_db.scalar(text("select count(*) from pg_stat_activity where pid = :pid"), {"pid": int(first)}):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the first module's connection is still open")
"""
)

FIRST_MODULE = (
    RECORD
    + """

async def test_first(async_db):
    record("first", await pid_of(async_db))


async def test_first_again(async_db):
    record("first_after", await pid_of(async_db))
"""
)


def test_each_loop_has_its_own_connection_closed_with_the_loop(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, loop_ini("module"))
    pytester.makepyfile(test_a_first=FIRST_MODULE, test_b_second=SECOND_MODULE)
    result = pytester.runpytest(PG_URL, "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    pids = _pids(pytester)
    assert pids["first"] == pids["first_after"]
    assert pids["other"] == pids["other_after"] != pids["first"]
    _assert_closed(pids)


def test_the_default_per_test_loop_opens_a_connection_per_test(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, loop_ini("function"))
    pytester.makepyfile(test_a_first=FIRST_MODULE)
    result = pytester.runpytest(PG_URL, "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    pids = _pids(pytester)
    assert pids["first"] != pids["first_after"]
    _assert_closed(pids)


def test_a_session_kept_from_an_earlier_test_cannot_reach_the_next_one(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, loop_ini("session"))
    pytester.makepyfile(
        """
        import pytest
        from sqlalchemy import select, text
        from sqlalchemy.exc import ResourceClosedError

        import myapp

        kept = {}

        async def test_keeps_a_session(async_db):
            kept["session"] = myapp.SessionLocal()
            kept["pid"] = await async_db.scalar(text("select pg_backend_pid()"))

        async def test_the_kept_session_is_on_a_closed_connection(async_db):
            assert await async_db.scalar(text("select pg_backend_pid()")) == kept["pid"]
            with pytest.raises(ResourceClosedError, match="closed"):
                await kept["session"].execute(select(1))
            await myapp.create_user("a@example.com")
            assert await myapp.count_users() == 1
        """
    )
    result = pytester.runpytest(PG_URL, "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_statement_caches_keep_working_across_many_tests(pytester: pytest.Pytester) -> None:
    make_project(pytester, loop_ini("session"))
    test = """
async def test_{n}(async_db):
    record("t{n}", await pid_of(async_db))
    await myapp.create_user("{n}@example.com")
    assert await myapp.count_users() == 1
    connection = await async_db.connection()
    await connection.execute(text("PREPARE mine AS SELECT {n}"))
"""
    pytester.makepyfile(RECORD + "".join(test.format(n=n) for n in range(40)))
    result = pytester.runpytest(PG_URL, "-p", "no:randomly")
    result.assert_outcomes(passed=40)
    assert len(set(_pids(pytester).values())) == 1


def test_database_isolation_still_gets_a_database_of_its_own(pytester: pytest.Pytester) -> None:
    make_project(pytester, loop_ini("session"))
    pytester.makepyfile(
        RECORD
        + """

async def test_before(async_db, pg_database):
    record("before", await pid_of(async_db))
    state["worker_database"] = pg_database.name

@pytest.mark.pg_isolation("database")
async def test_own_database(async_db, pg_database):
    record("own", await pid_of(async_db))
    assert pg_database.name != state["worker_database"]
    await myapp.create_user("a@example.com")

async def test_after(async_db):
    record("after", await pid_of(async_db))
    assert await myapp.count_users() == 0
"""
    )
    result = pytester.runpytest(PG_URL, "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    pids = _pids(pytester)
    assert pids["before"] == pids["after"] != pids["own"]


ANYIO_TESTS = (
    RECORD
    + """

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
async def runner_kept_by_a_module_fixture():
    yield


async def test_first(async_db, runner_kept_by_a_module_fixture):
    record("first", await pid_of(async_db))
    await (await async_db.connection()).execute(text("SELECT pg_advisory_lock(4444)"))


async def test_second(async_db, runner_kept_by_a_module_fixture):
    record("second", await pid_of(async_db))
    await assert_clean(async_db)
"""
)


def test_anyio_tests_share_the_runners_connection_while_it_lives(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, "asyncio_mode = strict\n" + STRICT_WARNINGS)
    pytester.makepyfile(test_kept=ANYIO_TESTS)
    pytester.makepyfile(
        test_runner_per_test=ANYIO_TESTS.replace(", runner_kept_by_a_module_fixture", "")
        .replace('"first"', '"alone"')
        .replace('"second"', '"alone_after"')
    )
    result = pytester.runpytest(PG_URL, "-p", "no:randomly", "-p", "no:asyncio")
    result.assert_outcomes(passed=4)
    pids = _pids(pytester)
    assert pids["first"] == pids["second"]
    assert pids["alone"] != pids["alone_after"]  # anyio ended its runner after each test
    _assert_closed(pids)


SYNC_ONLY_APP = """
from sqlalchemy import String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)


SessionLocal = sessionmaker(create_engine("postgresql+psycopg://app@db.invalid/production"))
"""


def test_a_sync_only_apps_tests_share_one_psycopg_connection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myapp=SYNC_ONLY_APP)
    pytester.makefile(
        ".ini",
        pytest="[pytest]\npgharness_schema = myapp:Base\npgharness_sessionmakers = myapp:SessionLocal\n"
        + STRICT_WARNINGS,
    )
    pytester.syspathinsert()
    pytester.makepyfile(
        """
        from pathlib import Path

        from sqlalchemy import func, select, text

        import myapp

        PIDS = Path(__file__).with_name("pids.txt")

        def record(label, pid):
            with PIDS.open("a") as out:
                out.write(f"{label} {pid}\\n")

        def test_leaves_session_state(db):
            record("sync", db.scalar(text("select pg_backend_pid()")))
            db.execute(text("SET work_mem = '7MB'"))
            db.execute(text("SELECT pg_advisory_lock(4545)"))
            db.execute(text("PREPARE sync_statement AS SELECT 1"))
            db.add(myapp.User(email="a@example.com"))
            db.commit()

        def test_finds_none_of_it(db):
            record("sync_after", db.scalar(text("select pg_backend_pid()")))
            assert db.execute(text("select name from pg_settings where source = 'session'")).all() == []
            assert db.scalar(text("select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()")) == 0
            assert db.scalar(text("select count(*) from pg_prepared_statements where from_sql")) == 0
            assert db.scalar(select(func.count(myapp.User.id))) == 0
        """
    )
    result = pytester.runpytest(PG_URL, "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    pids = _pids(pytester)
    assert pids["sync"] == pids["sync_after"]
