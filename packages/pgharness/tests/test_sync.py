# ruff: noqa: E501  (test sources embedded as strings are easier to read unwrapped)
"""``def`` tests: ``db`` is a blocking session over the app's transaction; async semantics
(lazy loads fail) are kept."""

from __future__ import annotations

import pytest
from _isolation_project import make_project
from conftest import DeveloperDatabase, metadata_of


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


def test_both_kinds_of_sessionmaker_run_in_database_isolation_and_never_hang(
    pytester: pytest.Pytester,
) -> None:
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
        import pytest
        from sqlalchemy import func, select
        from sqlalchemy.exc import IntegrityError
        from sqlalchemy.ext.asyncio import AsyncSession

        import myapp

        ORIGINAL = myapp.SyncSessionLocal.kw

        async def test_both_kinds_see_each_others_commits(async_db, pg_database):
            with myapp.SyncSessionLocal() as session:
                session.add(myapp.User(email="sync@example.com"))
                session.commit()
                assert session.get_bind().url.database == pg_database.name
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 1
            await myapp.create_user("async@example.com")
            with myapp.SyncSessionLocal() as session:
                assert session.scalar(select(func.count(myapp.User.id))) == 2
            legacy = myapp.LegacyAsyncSessionLocal()
            assert isinstance(legacy, AsyncSession)
            await legacy.close()

        async def test_the_same_key_through_both_kinds_is_an_error_not_a_hang(async_db):
            await myapp.create_user("twice@example.com")
            with myapp.SyncSessionLocal() as session:
                session.add(myapp.User(email="twice@example.com"))
                with pytest.raises(IntegrityError):
                    session.commit()

        def test_the_sessionmaker_is_restored():
            assert myapp.SyncSessionLocal.kw is ORIGINAL
            assert myapp.SyncSessionLocal.kw["bind"] is myapp.sync_engine

        def test_nothing_left_in_the_database(db):
            with myapp.SyncSessionLocal() as session:
                assert session.scalar(select(func.count(myapp.User.id))) == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        ["pgharness: pgharness_sessionmakers names both async and plain (sync) sessionmakers*"]
    )


SYNC_ONLY_APP = """
from fastapi import Depends, FastAPI
from sqlalchemy import String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)


engine = create_engine("DEVELOPER_URL")
SessionLocal = sessionmaker(engine, expire_on_commit=False)
app = FastAPI()


def get_session():
    with SessionLocal() as session:
        yield session


def create_user(email: str) -> User:
    with SessionLocal() as session:
        user = User(email=email)
        session.add(user)
        session.commit()
        return user


@app.post("/users", status_code=201)
def post_user(body: dict, session: Session = Depends(get_session)):
    user = User(email=body["email"])
    session.add(user)
    session.commit()
    return {"id": user.id}


@app.get("/users/count")
def get_count(session: Session = Depends(get_session)):
    return {"count": session.scalar(select(func.count(User.id)))}


@app.put("/users/{user_id}")
def put_user(user_id: int, body: dict, session: Session = Depends(get_session)):
    session.get(User, user_id).email = body["email"]
    session.commit()
    return {}
"""


def test_a_sync_only_app_shares_one_transaction_with_db_and_client(
    project: pytest.Pytester, developer_database: DeveloperDatabase, server_args: list[str]
) -> None:
    dev = developer_database
    project.makepyfile(myapp=SYNC_ONLY_APP.replace("DEVELOPER_URL", dev.sync_url))
    dev.create_tables(metadata_of(SYNC_ONLY_APP.replace("DEVELOPER_URL", "postgresql+psycopg://")))
    project.makefile(
        ".ini",
        pytest="[pytest]\npgharness_schema = myapp:Base\npgharness_sessionmakers = myapp:SessionLocal\n"
        "pgharness_app = myapp:app\n",
    )
    project.syspathinsert()
    project.makepyfile(
        """
        from sqlalchemy import func, select
        from sqlalchemy.orm import Session

        import myapp

        def test_db_is_a_session_of_the_apps_kind_in_the_same_transaction(db, client):
            assert isinstance(db, Session) and db.info == myapp.SessionLocal.kw.get("info", {})
            db.add(myapp.User(email="seeded@example.com"))
            db.commit()
            assert client.get("/users/count").json() == {"count": 1}
            assert client.post("/users", json={"email": "posted@example.com"}).status_code == 201
            myapp.create_user("service@example.com")
            assert db.scalar(select(func.count(myapp.User.id))) == 3

        def test_a_re_select_sees_what_the_app_committed(db, client):
            user = myapp.User(email="old@example.com")
            db.add(user)
            db.commit()
            client.put(f"/users/{user.id}", json={"email": "new@example.com"})
            again = db.scalar(select(myapp.User).where(myapp.User.id == user.id))
            assert again is user and again.email == "new@example.com"

        def test_nothing_left(db):
            assert db.scalar(select(func.count(myapp.User.id))) == 0
        """
    )
    result = project.runpytest(*server_args, "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    dev.assert_untouched()


def test_async_re_selects_see_what_the_app_committed(pytester: pytest.Pytester) -> None:
    make_project(pytester, "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function")
    pytester.makepyfile(
        """
        from sqlalchemy import select, update

        import myapp

        async def test_re_select_after_the_app_updated_the_row(async_db, async_client):
            user = myapp.User(email="old@example.com")
            async_db.add(user)
            await async_db.commit()
            async with myapp.SessionLocal() as session:
                await session.execute(update(myapp.User).where(myapp.User.id == user.id).values(email="new@example.com"))
                await session.commit()
            again = await async_db.scalar(select(myapp.User).where(myapp.User.id == user.id))
            assert again is user
            assert again.email == "new@example.com"
            listed = (await async_db.scalars(select(myapp.User))).all()
            assert [u.email for u in listed] == ["new@example.com"]

        async def rename(user_id):
            async with myapp.SessionLocal() as session:
                await session.execute(update(myapp.User).where(myapp.User.id == user_id).values(email="new@example.com"))
                await session.commit()

        def test_def_re_select_after_the_app_updated_the_row(db, client):
            user = myapp.User(email="old@example.com")
            db.add(user)
            db.commit()
            client.portal.call(rename, user.id)  # the app's own session, on the app's loop
            again = db.scalar(select(myapp.User).where(myapp.User.id == user.id))
            assert again is user
            assert again.email == "new@example.com"
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2)


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
