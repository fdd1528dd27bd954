# ruff: noqa: E501  (test sources embedded as strings are easier to read unwrapped)
"""``async_client`` and ``client``: the app, its lifespan and its background tasks run inside
the test's transaction, seen by ``async_db`` / ``db``."""

from __future__ import annotations

import pytest
from _isolation_project import make_project

ASYNC = """
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


def test_async_client_and_async_db_share_the_transaction(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        from sqlalchemy import func, select

        import myapp

        async def test_requests_and_session_see_each_other(async_client, async_db):
            async_db.add(myapp.User(email="seed@example.com"))
            await async_db.commit()
            assert (await async_client.get("/users/count")).json() == {"count": 1}
            created = await async_client.post("/users", json={"email": "new@example.com"})
            assert created.status_code == 201
            taken = await async_client.post("/users", json={"email": "seed@example.com"})
            assert taken.status_code == 409  # the app rolled back; the seed survives
            emails = set(await async_db.scalars(select(myapp.User.email)))
            assert emails == {"seed@example.com", "new@example.com"}

        async def test_background_tasks_and_lifespan(async_client, async_db):
            assert (await async_client.get("/state")).json() == {"greeting": "hello", "at_startup": 0}
            assert (await async_client.post("/users/later", json={"email": "bg@example.com"})).status_code == 202
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 1

        async def test_nothing_left(async_db):
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_client_and_db_share_the_transaction_in_def_tests(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makepyfile(
        """
        from sqlalchemy import func, select

        import myapp

        def test_requests_and_db_see_each_other(client, db):
            db.add(myapp.User(email="seed@example.com"))
            db.commit()
            assert client.get("/users/count").json() == {"count": 1}
            assert client.post("/users", json={"email": "new@example.com"}).status_code == 201
            assert client.post("/users", json={"email": "seed@example.com"}).status_code == 409
            assert set(db.scalars(select(myapp.User.email))) == {"seed@example.com", "new@example.com"}

        def test_background_tasks_and_lifespan(client, db):
            assert client.get("/state").json() == {"greeting": "hello", "at_startup": 0}
            assert client.post("/users/later", json={"email": "bg@example.com"}).status_code == 202
            assert db.scalar(select(func.count(myapp.User.id))) == 1

        def test_nothing_left(db):
            assert db.scalar(select(func.count(myapp.User.id))) == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_app_factory_and_a_wrong_app_setting(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC + "\n")
    pytester.makepyfile(
        factory="""
        import myapp

        made = []

        def create_app():
            made.append(1)
            return myapp.app

        not_an_app = 42
        """
    )
    pytester.makepyfile(
        test_factory="""
        import factory

        def test_factory_is_called(client):
            assert client.get("/users/count").json() == {"count": 0}
            assert factory.made == [1]
        """
    )
    result = pytester.runpytest("-o", "pgharness_app=factory:create_app")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("-o", "pgharness_app=factory:not_an_app")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # stopped at start, before any test
    result.stdout.fnmatch_lines(["*pgharness_app names 'factory:not_an_app'*Fix*"])


def test_fixtures_of_the_wrong_style_say_which_to_use(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        def test_sync_with_async_db(async_db):
            pass

        async def test_async_with_client(client):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*is a def test but uses 'async_db', which is for async def tests. Use 'db' instead*",
            "*is an async def test but uses 'client'*Use 'async_client' instead*",
        ]
    )
