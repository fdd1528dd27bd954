"""Transaction isolation: the app's commits and rollbacks stay inside the test."""

from __future__ import annotations

import pytest
from _isolation_project import make_project

ASYNC = """
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


def test_commit_and_integrity_error_stay_inside_the_test(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import pytest
        from sqlalchemy import func, select
        from sqlalchemy.exc import IntegrityError

        import myapp

        async def test_service_commits_are_visible_in_the_test(async_db):
            await myapp.create_user("a@example.com")
            await myapp.create_user("b@example.com")
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 2

        async def test_rollback_after_integrity_error_keeps_seeded_rows(async_db):
            async_db.add(myapp.User(email="seed@example.com"))
            await async_db.commit()
            async with myapp.SessionLocal() as session:
                session.add(myapp.User(email="seed@example.com"))
                with pytest.raises(IntegrityError):
                    await session.commit()
                await session.rollback()
                session.add(myapp.User(email="other@example.com"))
                await session.commit()
            emails = set(await async_db.scalars(select(myapp.User.email)))
            assert emails == {"seed@example.com", "other@example.com"}

        async def test_nothing_was_left_behind(async_db):
            assert await myapp.count_users() == 0
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_sessionmakers_keep_their_options_and_are_restored_exactly(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import pytest
        from sqlalchemy.ext.asyncio import AsyncConnection

        import myapp

        ORIGINAL_KW = myapp.SessionLocal.kw
        SNAPSHOT = dict(ORIGINAL_KW)

        async def test_sessions_are_bound_to_the_test_connection(async_db):
            first, second = myapp.SessionLocal(), myapp.SessionLocal()
            assert first is not second and first is not async_db
            for session in (first, second, async_db):
                assert isinstance(session.bind, AsyncConnection)
                assert session.bind is async_db.bind
                assert session.sync_session.expire_on_commit is False
                assert session.info == {"app": "myapp"}
            await first.close()
            await second.close()

        def test_kw_is_the_original_dict_again():
            assert myapp.SessionLocal.kw is ORIGINAL_KW
            assert myapp.SessionLocal.kw == SNAPSHOT
            assert myapp.SessionLocal.kw["bind"] is myapp.engine
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_the_marker_alone_rebinds_the_sessionmakers(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import pytest

        import myapp

        @pytest.mark.pg_isolation
        async def test_async_service_without_fixtures():
            await myapp.create_user("a@example.com")
            assert await myapp.count_users() == 1

        @pytest.mark.pg_isolation("transaction")
        async def test_and_it_was_rolled_back():
            assert await myapp.count_users() == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_unknown_isolation_names_the_valid_values(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.pg_isolation("savepoint")
        async def test_it(async_db):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pg_isolation('savepoint')*'transaction', 'database'*"])


def test_committing_the_connection_itself_fails_and_commits_nothing(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import pytest
        from sqlalchemy import text

        import myapp
        from pgharness import IsolationError

        async def test_commit_of_the_connection(async_db):
            await myapp.create_user("a@example.com")
            connection = await async_db.connection()
            await connection.commit()

        async def test_commit_statement(async_db):
            await myapp.create_user("b@example.com")
            with pytest.raises(IsolationError, match="would end the test's outer transaction"):
                await async_db.execute(text("COMMIT"))

        async def test_nothing_was_committed(async_db):
            assert await myapp.count_users() == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*IsolationError*commit() was called on the test's connection itself*"]
    )


def test_a_task_left_running_on_the_connection_fails_its_test(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import asyncio

        import myapp

        async def test_forgets_a_task(async_db):
            started = asyncio.Event()

            async def writer():
                await myapp.count_users()
                started.set()
                await asyncio.Event().wait()  # never finishes

            asyncio.get_running_loop().create_task(writer(), name="forgotten-writer")
            await started.wait()

        async def test_next_test_is_clean(async_db):
            assert await myapp.count_users() == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*forgotten-writer*still running on the test's database*"])


def test_use_from_another_loop_is_refused_before_the_driver_sees_it(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import asyncio
        import threading

        import pytest
        from sqlalchemy import func, select

        import myapp
        from pgharness import CrossLoopError

        async def test_other_loop(async_db):
            errors = []

            def in_another_loop():
                try:
                    asyncio.run(myapp.count_users())
                except BaseException as exc:
                    errors.append(exc)

            thread = threading.Thread(target=in_another_loop)
            thread.start()
            thread.join()
            assert len(errors) == 1 and isinstance(errors[0], CrossLoopError), errors
            message = str(errors[0])
            assert "pytest-asyncio function-scoped loop" in message
            assert "loop_scope" in message
            # The statement never reached asyncpg: the connection still works.
            await myapp.create_user("a@example.com")
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 1
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)


def test_database_isolation_gives_a_real_pool_of_its_own(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import asyncio

        import pytest
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import AsyncEngine

        import myapp

        names = {}

        @pytest.mark.pg_isolation("database")
        async def test_two_connections_see_each_others_commits(pg_database, async_db):
            names["first"] = pg_database.name
            assert isinstance(myapp.SessionLocal.kw["bind"], AsyncEngine)
            assert "join_transaction_mode" not in myapp.SessionLocal.kw
            engine = myapp.SessionLocal.kw["bind"]
            async with engine.connect() as one, engine.connect() as two:
                assert await one.scalar(text("select current_database()")) == pg_database.name
                await one.execute(text("insert into users (email) values ('one@example.com')"))
                await one.commit()
                assert await two.scalar(text("select count(*) from users")) == 1
                # Both at once: a real pool, not one shared connection.
                pids = await asyncio.gather(
                    one.scalar(text("select pg_backend_pid()")),
                    two.scalar(text("select pg_backend_pid()")),
                )
                assert pids[0] != pids[1]
            await myapp.create_user("two@example.com")
            assert await myapp.count_users() == 2

        @pytest.mark.pg_isolation("database")
        def test_def_test_gets_another_fresh_database(pg_database, client, db):
            names["second"] = pg_database.name
            assert names["second"] != names["first"]
            assert client.get("/users/count").json() == {"count": 0}
            assert client.post("/users", json={"email": "c@example.com"}).status_code == 201

        async def test_transaction_tests_use_the_worker_database(pg_database, async_db):
            assert pg_database.name not in names.values()
            assert await myapp.count_users() == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_without_sessionmakers_async_db_is_a_plain_session(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    ini = pytester.path / "pytest.ini"
    ini.write_text(ini.read_text().replace("pgharness_sessionmakers = myapp:SessionLocal\n", ""))
    pytester.makepyfile(
        """
        from sqlalchemy import func, select

        import myapp

        async def test_plain_session(async_db):
            assert async_db.sync_session.expire_on_commit is True  # SQLAlchemy's default
            assert async_db.info == {}
            async_db.add(myapp.User(email="a@example.com"))
            await async_db.commit()
            assert myapp.SessionLocal.kw["bind"] is myapp.engine  # nothing was rebound

        async def test_rolled_back(async_db):
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_a_wrong_sessionmaker_setting_stops_the_run_and_names_the_fix(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        async def test_it(async_db):
            pass
        """
    )
    result = pytester.runpytest("-o", "pgharness_sessionmakers=myapp:engine")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.assert_outcomes()
    result.stdout.fnmatch_lines(
        ["*pgharness_sessionmakers names 'myapp:engine'*AsyncEngine, not an async_sessionmaker*"]
    )


CONCURRENT_USE = '*ConcurrentUseError*In transaction isolation*pg_isolation("database")*'


def test_two_statements_at_once_on_the_test_connection_are_refused(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import asyncio

        from sqlalchemy import func, select

        import myapp

        async def test_counts_in_two_tasks(async_db):
            await asyncio.gather(myapp.count_users(), myapp.count_users())

        async def test_the_connection_is_still_usable(async_db):
            await myapp.create_user("a@example.com")
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 1
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    # One failure, no teardown error for the task gather left running: the failure says why.
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["*ConcurrentUseError*'SAVEPOINT sa_savepoint_*' was sent*while another task's statement*"]
    )
    result.stdout.fnmatch_lines([CONCURRENT_USE])


def test_interleaved_savepoints_of_two_tasks_are_refused(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import asyncio

        from sqlalchemy import text

        import myapp

        async def test_sessions_overlap(async_db):
            first_open, second_open, first_closed = (asyncio.Event() for _ in range(3))

            async def first():
                async with myapp.SessionLocal() as session:
                    await session.execute(text("select 1"))
                    first_open.set()
                    await second_open.wait()
                first_closed.set()  # its savepoint ended, and the one begun after it

            async def second():
                await first_open.wait()
                async with myapp.SessionLocal() as session:
                    await session.execute(text("select 2"))
                    second_open.set()
                    await first_closed.wait()

            await asyncio.gather(
                asyncio.create_task(first(), name="first"),
                asyncio.create_task(second(), name="second"),
            )
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ConcurrentUseError*'ROLLBACK TO SAVEPOINT sa_savepoint_2' from task * refers to"
            " savepoint sa_savepoint_2, which task 'second' began and 'ROLLBACK TO SAVEPOINT"
            " sa_savepoint_1' from task * already ended*"
        ]
    )
    assert 'savepoint "sa_savepoint_2" does not exist' not in result.stdout.str()


MIDDLEWARE_APP = """
from fastapi import Depends, FastAPI, Request
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.middleware.base import BaseHTTPMiddleware

import myapp


class TimingMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next):
        async with myapp.SessionLocal() as session:
            await session.execute(text("select 'before'"))
        return await call_next(request)


app = FastAPI()
app.add_middleware(TimingMiddleware)


@app.post("/users")
async def post_user(body: dict, session: AsyncSession = Depends(myapp.get_session)):
    session.add(myapp.User(email=body["email"]))
    await session.commit()
    return {"count": await session.scalar(select(func.count(myapp.User.id)))}
"""


def test_sessions_one_after_another_across_tasks_are_not_concurrent_use(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        middleware_app=MIDDLEWARE_APP,
        test_sequential="""
        import asyncio

        from sqlalchemy import func, select

        import myapp

        async def test_requests_through_base_http_middleware(async_client, async_db):
            async_db.add(myapp.User(email="seed@example.com"))
            await async_db.flush()  # the test's savepoint stays open under the requests
            for n in range(3):
                response = await async_client.post("/users", json={"email": f"{n}@example.com"})
                assert response.status_code == 200, response.text
            await async_db.commit()
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 4

        async def test_nested_sessions_and_awaited_tasks(async_db):
            async with myapp.SessionLocal() as outer:
                await outer.execute(select(1))
                async with myapp.SessionLocal() as inner:
                    await inner.execute(select(2))
                await asyncio.create_task(myapp.create_user("task@example.com"))
                await outer.commit()
            assert await myapp.count_users() == 1
        """,
    )
    result = pytester.runpytest("-p", "no:randomly", "-o", "pgharness_app=middleware_app:app")
    result.assert_outcomes(passed=2)


def test_concurrent_requests_work_in_database_isolation(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import asyncio

        import pytest

        import myapp

        @pytest.mark.pg_isolation("database")
        async def test_two_services_at_once(async_db):
            await asyncio.gather(myapp.create_user("a@example.com"), myapp.count_users())
            assert await myapp.count_users() == 1
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)


def test_a_lazy_load_in_a_def_test_shows_only_the_missing_greenlet(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        from sqlalchemy import select

        import myapp

        def test_note_shows_its_user(db):
            db.add(myapp.Note(text="hi", user=myapp.User(email="a@example.com")))
            db.commit()
            db.expunge_all()
            note = db.scalar(select(myapp.Note))
            assert note.user.email == "a@example.com"
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MissingGreenlet: greenlet_spawn has not been called*"])
    output = result.stdout.str()
    assert "no running event loop" not in output
    assert "During handling of the above exception" not in output
