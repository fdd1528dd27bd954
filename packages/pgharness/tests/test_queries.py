"""pg_queries and @pytest.mark.pg_max_queries: the SQL the code under test ran."""

from __future__ import annotations

import pytest
from _isolation_project import make_project

ASYNC = """
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


def test_statements_exclude_the_harness_transaction_control(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        from sqlalchemy import func, select
        import myapp

        async def test_counts_only_the_code_under_test(async_db, pg_queries):
            await myapp.create_user("a@example.com")   # commit() = RELEASE SAVEPOINT here
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 1
            assert pg_queries.count == 2, pg_queries.statements
            assert pg_queries.statements[0].startswith("INSERT INTO users")
            assert "count(users.id)" in pg_queries.statements[1]
            for sql in pg_queries.statements:
                assert "SAVEPOINT" not in sql and not sql.startswith(("BEGIN", "ROLLBACK"))
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1)


def test_at_most_lists_statements_and_groups_the_n_plus_1(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        from sqlalchemy import select
        import myapp

        async def test_notes_with_their_authors(async_db, pg_queries):
            for n in range(3):
                async_db.add(myapp.Note(text=f"note {n}", user=myapp.User(email=f"{n}@x.org")))
            await async_db.flush()
            async_db.expunge_all()
            before = pg_queries.count
            with pg_queries.at_most(2):
                notes = (await async_db.scalars(select(myapp.Note))).all()
                emails = [(await note.awaitable_attrs.user).email for note in notes]
            assert len(emails) == 3
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: pg_queries.at_most(2): the block ran 4 SQL statements,"
            " more than the 2 allowed:",
            "*  1. SELECT notes.id, notes.user_id, notes.text *FROM notes",
            "*  2. SELECT users.id*FROM users*WHERE users.id = $1::INTEGER*parameters*",
            "*  4. SELECT users.id*",
            "*Repeated statement shapes (an N+1 pattern: one query per object):",
            "*  3x SELECT users.id*WHERE users.id = ?",
            "*selectinload(Parent.children)*",
        ]
    )
    # The seeding before the block is not counted.
    result.stdout.no_fnmatch_line("*INSERT INTO*")


def test_max_queries_marker_fails_with_the_numbered_list(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        import pytest
        from sqlalchemy import text

        @pytest.mark.pg_max_queries(2)
        async def test_within_the_limit(async_db):
            await async_db.execute(text("select 1"))
            await async_db.execute(text("select 2"))

        @pytest.mark.pg_max_queries(1)
        async def test_over_the_limit(async_db):
            await async_db.execute(text("select 'first'"))
            await async_db.execute(text("select 'second'"))

        @pytest.mark.pg_max_queries("a few")
        async def test_bad_marker(async_db):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:randomly", "-v")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.pg_max_queries(1): the test ran 2 SQL statements,"
            " more than the 1 allowed:",
            "*  1. select 'first'",
            "*  2. select 'second'",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*@pytest.mark.pg_max_queries: pg_max_queries(n) needs a whole number*'a few'*"]
    )


def test_app_statements_under_client_are_counted(pytester: pytest.Pytester) -> None:
    make_project(pytester, ASYNC)
    pytester.makepyfile(
        """
        def test_post_user_is_one_insert(client, pg_queries):
            with pg_queries.at_most(1):
                response = client.post("/users", json={"email": "a@example.com"})
            assert response.status_code == 201
            assert pg_queries.count == 1
            assert pg_queries.statements[0].startswith("INSERT INTO users")
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1)


def test_listener_is_attached_only_while_a_test_asks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from sqlalchemy import Engine, event
        from pgharness._queries import _listener

        def attached():
            return event.contains(Engine, "before_cursor_execute", _listener._record)

        def test_without_pg_queries():
            assert not attached()

        def test_with_pg_queries(pg_queries):
            assert attached()
            with pg_queries.at_most(5):
                assert attached()
            assert attached()

        def test_after():
            assert not attached()
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)
