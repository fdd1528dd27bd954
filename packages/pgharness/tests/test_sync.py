# ruff: noqa: E501  (test sources embedded as strings are easier to read unwrapped)
"""``def`` tests: ``db`` is a blocking session over the app's transaction; async semantics
(lazy loads fail) are kept."""

from __future__ import annotations

import pytest
from _isolation_project import make_project


def test_db_offers_what_seeding_and_checking_need(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makepyfile(
        """
        import threading

        import pytest
        from sqlalchemy import func, insert, select, text, update
        from sqlalchemy.exc import IntegrityError

        import myapp

        def test_seeding_and_checking(db, client):
            alice = myapp.User(email="alice@example.com")
            db.add(alice)
            db.add_all([myapp.User(email="bob@example.com"), myapp.User(email="carol@example.com")])
            db.flush()
            assert alice.id is not None
            db.add(myapp.Note(user_id=alice.id, text="hi"))
            db.commit()
            assert db.get(myapp.User, alice.id) is alice
            assert db.scalar(select(func.count(myapp.User.id))) == 3
            rows = db.execute(select(myapp.User.email).order_by(myapp.User.email)).all()
            assert [r.email for r in rows] == ["alice@example.com", "bob@example.com", "carol@example.com"]
            users = db.scalars(select(myapp.User).order_by(myapp.User.id)).all()
            assert users[0] is alice
            # The app changes the row; refresh reads it again.
            db.execute(text("update users set email = 'alice@new.example' where id = :id"), {"id": alice.id})
            db.refresh(alice)
            assert alice.email == "alice@new.example"
            # An ORM UPDATE whose WHERE the session cannot evaluate adds RETURNING: rows and
            # a rowcount, as in the async session.
            renamed = db.execute(
                update(myapp.User)
                .where(myapp.User.id == select(myapp.User.id).where(myapp.User.email == "bob@example.com").scalar_subquery())
                .values(email="bob@new.example")
            )
            assert renamed.rowcount == 1
            assert db.scalar(select(myapp.User.email).where(myapp.User.email.like("bob@%"))) == "bob@new.example"
            db.execute(update(myapp.User).where(myapp.User.email == "bob@new.example").values(email="bob@example.com"))
            db.delete(users[2])
            db.commit()
            assert client.get("/users/count").json() == {"count": 2}
            db.add(myapp.User(email="bob@example.com"))
            with pytest.raises(IntegrityError):
                db.commit()
            db.rollback()
            assert db.scalar(select(func.count(myapp.User.id))) == 2

        def test_a_lazy_load_fails_as_in_the_app(db):
            user = myapp.User(email="lazy@example.com")
            db.add(user)
            db.commit()
            db.add(myapp.Note(user_id=user.id, text="note"))
            db.commit()
            db.expunge_all()
            loaded = db.scalar(select(myapp.User))
            with pytest.raises(Exception, match="greenlet"):
                loaded.notes  # a lazy load is IO: it fails here as it fails in the app

        def test_nothing_left(db):
            assert db.scalar(select(func.count(myapp.User.id))) == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)


SYNC_APP_EXTRA = """

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

sync_engine = create_engine("postgresql+psycopg://app@db.invalid:5432/production")
SyncSessionLocal = sessionmaker(sync_engine, expire_on_commit=False)
LegacyAsyncSessionLocal = sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
"""


def test_plain_and_legacy_sessionmakers(pytester: pytest.Pytester) -> None:
    from _isolation_project import APP

    make_project(
        pytester,
        "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function",
        app=APP + SYNC_APP_EXTRA,
    )
    ini = pytester.path / "pytest.ini"
    ini.write_text(
        ini.read_text().replace(
            "pgharness_sessionmakers = myapp:SessionLocal",
            "pgharness_sessionmakers =\n    myapp:SessionLocal\n    myapp:SyncSessionLocal\n"
            "    myapp:LegacyAsyncSessionLocal",
        )
    )
    pytester.makepyfile(
        """
        from sqlalchemy import func, select
        from sqlalchemy.ext.asyncio import AsyncSession

        import myapp

        ORIGINAL = myapp.SyncSessionLocal.kw

        async def test_sync_sessionmaker_gets_its_own_rolled_back_transaction(async_db):
            with myapp.SyncSessionLocal() as session:
                session.add(myapp.User(email="sync@example.com"))
                session.commit()
                assert session.scalar(select(func.count(myapp.User.id))) == 1
            # A separate transaction: the async side does not see it.
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 0
            legacy = myapp.LegacyAsyncSessionLocal()
            assert isinstance(legacy, AsyncSession) and legacy.bind is async_db.bind
            await legacy.close()

        def test_the_sessionmaker_is_restored():
            assert myapp.SyncSessionLocal.kw is ORIGINAL
            assert myapp.SyncSessionLocal.kw["bind"] is myapp.sync_engine

        def test_nothing_left_in_the_database(db):
            with myapp.SyncSessionLocal() as session:
                assert session.scalar(select(func.count(myapp.User.id))) == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_asyncio_run_in_a_def_test_is_refused_with_the_fix(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makepyfile(
        """
        import asyncio

        import pytest

        import myapp
        from pgharness import CrossLoopError

        def test_runs_the_service_on_its_own_loop(client):
            with pytest.raises(CrossLoopError) as caught:
                asyncio.run(myapp.count_users())
            assert "client fixture" in str(caught.value) and "async def" in str(caught.value)
            # The connection is still usable.
            assert client.get("/users/count").json() == {"count": 0}
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
