"""MissingGreenlet explained: the attribute, the kind of load, the user's line and the fixes.

Each project fails for real (plain SQLAlchemy + pytest-asyncio, no pgharness fixture), in the
shapes of the troubleshooting guide: a lazy relationship read (attempt 5), a read after
``commit()`` on a session bound to a wrapped connection (attempt 3), the 1.x
savepoint-restart listener (attempt 4), a deferred column, and the same inside a FastAPI app
behind httpx's ASGI transport and behind ``TestClient``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _diagnostics_project import (
    ODDITIES,
    ODDITIES_UNTOUCHED,
    pgharness_section,
    run,
    scratch_database,
    write_project,
)
from _isolation_project import APP as ISOLATION_APP
from _isolation_project import make_project

SESSION_FIXTURE = """
    import pytest_asyncio
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from sqlalchemy.pool import NullPool

    from models import Base

    engine = create_async_engine("DATABASE_URL", poolclass=NullPool)


    @pytest_asyncio.fixture
    async def session():
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.run_sync(Base.metadata.create_all)
        session = AsyncSession(engine)
        try:
            yield session
        finally:
            await session.rollback()
            await session.close()
"""


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


def test_lazy_relationship_names_attribute_line_and_fixes(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_project(
        pytester,
        database_url,
        conftest=SESSION_FIXTURE,
        test_loans="""
            from sqlalchemy import select
            from models import Book, Loan


            async def test_loan_shows_its_book(session):
                session.add(Loan(book=Book(title="Dune")))
                await session.flush()
                session.expunge_all()
                loan = (await session.scalars(select(Loan))).one()
                assert loan.book.title == "Dune"
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MissingGreenlet: greenlet_spawn has not been called*"])
    section = pgharness_section(result)
    assert "Reading `Loan.book` needed a database query" in section
    assert "relationship with the default lazy loading" in section
    assert 'test_loans.py:10:  assert loan.book.title == "Dune"' in section
    assert ".options(joinedload(Loan.book))`;" in section  # many-to-one: one JOIN
    assert "many-to-one" not in section
    assert "await loan.awaitable_attrs.book` (add `AsyncAttrs` to your declarative Base)" in section
    assert 'lazy="raise"' in section


def test_read_after_commit_names_expire_on_commit(
    pytester: pytest.Pytester, database_url: str
) -> None:
    # Attempt 3: a session bound to a connection wrapped in a transaction; the code commits.
    write_project(
        pytester,
        database_url,
        test_commit="""
            from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
            from sqlalchemy.pool import NullPool
            from models import Base, Book

            engine = create_async_engine("DATABASE_URL", poolclass=NullPool)


            async def create_book(session, title):
                book = Book(title=title)
                session.add(book)
                await session.commit()
                return book


            async def test_created_book_has_an_id():
                async with engine.connect() as connection:
                    await connection.run_sync(Base.metadata.create_all)
                    await connection.commit()
                    async with connection.begin():
                        session = AsyncSession(bind=connection)
                        book = await create_book(session, "Dune")
                        assert book.id is not None
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MissingGreenlet*"])
    section = pgharness_section(result)
    assert "Reading `Book.id`" in section
    assert "expired by `commit()`: the session has expire_on_commit=True" in section
    assert "test_commit.py:22:  assert book.id is not None" in section
    assert "expire_on_commit=False" in section
    assert "await session.refresh(book)" in section


def test_odd_objects_in_the_frames_do_not_stop_the_explanation(
    pytester: pytest.Pytester, database_url: str
) -> None:
    # The read after commit of the test above, with locals and globals that answer attributes
    # in odd ways in the frames the explanation reads.
    write_project(
        pytester,
        database_url,
        oddities=ODDITIES,
        test_commit="""
            from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
            from sqlalchemy.pool import NullPool
            from models import Base, Book
            from oddities import Unanswerable, cdll, mock

            engine = create_async_engine("DATABASE_URL", poolclass=NullPool)


            async def create_book(session, title, helpers):
                book = Book(title=title)
                session.add(book)
                await session.commit()
                return book


            async def test_created_book_has_an_id():
                library, unanswerable, stand_in = cdll, Unanswerable(), mock
                async with engine.connect() as connection:
                    await connection.run_sync(Base.metadata.create_all)
                    await connection.commit()
                    async with connection.begin():
                        session = AsyncSession(bind=connection)
                        book = await create_book(session, "Dune", (library, unanswerable, stand_in))
                        assert book.id is not None
        """,
        test_oddities_untouched=ODDITIES_UNTOUCHED,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*MissingGreenlet*"])
    section = pgharness_section(result)
    assert "could not explain" not in section
    assert "Reading `Book.id`" in section
    assert "expired by `commit()`: the session has expire_on_commit=True" in section
    assert "test_commit.py:24:  assert book.id is not None" in section
    assert "await session.refresh(book)" in section


def test_savepoint_restart_listener_is_named(pytester: pytest.Pytester, database_url: str) -> None:
    # Attempt 4: the SQLAlchemy 1.x recipe, expire_all() in an after_transaction_end listener.
    write_project(
        pytester,
        database_url,
        test_savepoint="""
            from sqlalchemy import event
            from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
            from sqlalchemy.pool import NullPool
            from models import Base, Book

            engine = create_async_engine("DATABASE_URL", poolclass=NullPool)


            async def test_book_survives_commit():
                async with engine.connect() as connection:
                    await connection.run_sync(Base.metadata.create_all)
                    await connection.commit()
                    await connection.begin()
                    session = AsyncSession(bind=connection, expire_on_commit=False)
                    await session.begin_nested()

                    @event.listens_for(session.sync_session, "after_transaction_end")
                    def restart_savepoint(sync_session, transaction):
                        if transaction.nested and not transaction._parent.nested:
                            sync_session.expire_all()
                            sync_session.begin_nested()

                    book = Book(title="Dune")
                    session.add(book)
                    await session.commit()
                    assert book.title == "Dune"
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MissingGreenlet*"])
    section = pgharness_section(result)
    assert "Reading `Book.title`" in section
    assert "restart_savepoint" in section
    assert "expire_all()" in section
    assert 'join_transaction_mode="create_savepoint"' in section


def test_deferred_column_is_named(pytester: pytest.Pytester, database_url: str) -> None:
    write_project(
        pytester,
        database_url,
        conftest=SESSION_FIXTURE,
        test_deferred="""
            from sqlalchemy import select
            from models import Book


            async def test_blurb(session):
                session.add(Book(title="Dune", blurb="sand"))
                await session.flush()
                session.expunge_all()
                book = (await session.scalars(select(Book))).one()
                assert book.blurb == "sand"
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    section = pgharness_section(result)
    assert "`Book.blurb` is a deferred column" in section
    assert ".options(undefer(Book.blurb))" in section
    assert "test_deferred.py:10" in section


APP = """
    from fastapi import FastAPI
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
    from sqlalchemy.pool import NullPool

    from models import Base, Book, Loan

    engine = create_async_engine("DATABASE_URL", poolclass=NullPool)
    SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
    app = FastAPI()


    async def first_loan_title(session):
        loan = (await session.scalars(select(Loan))).first()
        return loan.book.title


    @app.get("/loans/first")
    async def first_loan():
        async with SessionLocal() as session:
            return {"title": await first_loan_title(session)}


    async def seed():
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.run_sync(Base.metadata.create_all)
        async with SessionLocal() as session:
            session.add(Loan(book=Book(title="Dune")))
            await session.commit()
"""


def test_lazy_load_inside_the_app_behind_an_async_client(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_project(
        pytester,
        database_url,
        app=APP,
        test_api="""
            import httpx
            from app import app, seed


            async def test_first_loan():
                await seed()
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    response = await client.get("/loans/first")
                assert response.json() == {"title": "Dune"}
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MissingGreenlet: greenlet_spawn has not been called*"])
    section = pgharness_section(result)
    assert "Reading `Loan.book`" in section
    assert "app.py:15:  return loan.book.title" in section
    assert '(reached from test_api.py:9:  response = await client.get("/loans/first"))' in section
    assert "inside the app, while handling the request" in section
    assert "joinedload(Loan.book)" in section


def test_lazy_load_inside_the_app_behind_testclient(
    pytester: pytest.Pytester, database_url: str
) -> None:
    write_project(
        pytester,
        database_url,
        app=APP,
        test_api_sync="""
            import asyncio
            from fastapi.testclient import TestClient
            from app import app, seed


            def test_first_loan():
                asyncio.run(seed())
                with TestClient(app) as client:
                    response = client.get("/loans/first")
                assert response.json() == {"title": "Dune"}
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MissingGreenlet*"])
    section = pgharness_section(result)
    assert "Reading `Loan.book`" in section
    assert "app.py:15:  return loan.book.title" in section
    assert "inside the app" in section


def test_passing_and_unrelated_failures_get_no_section(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
            def test_passes():
                assert True

            def test_fails():
                assert 1 == 2
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    assert pgharness_section(result) == ""
    result.stdout.no_fnmatch_line("*- pgharness -*")


PGHARNESS_ROUTE = """

@app.get("/notes/{note_id}/author")
async def note_author(note_id: int, session: AsyncSession = Depends(get_session)):
    note = await session.get(Note, note_id)
    return {"email": note.user.email}
"""

PGHARNESS_INI = """
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


@pytest.mark.parametrize(
    "test_source",
    [
        pytest.param(
            """
            import myapp

            async def test_author(async_client, async_db):
                note = myapp.Note(text="hello", user=myapp.User(email="a@example.com"))
                async_db.add(note)
                await async_db.commit()
                response = await async_client.get(f"/notes/{note.id}/author")
                assert response.json() == {"email": "a@example.com"}
            """,
            id="async_client",
        ),
        pytest.param(
            """
            import myapp

            def test_author(client, db):
                note = myapp.Note(text="hello", user=myapp.User(email="a@example.com"))
                db.add(note)
                db.commit()
                response = client.get(f"/notes/{note.id}/author")
                assert response.json() == {"email": "a@example.com"}
            """,
            id="client",
        ),
    ],
)
def test_lazy_load_in_the_app_behind_pgharness_clients(
    pytester: pytest.Pytester, test_source: str
) -> None:
    make_project(pytester, PGHARNESS_INI, app=ISOLATION_APP + PGHARNESS_ROUTE)
    pytester.makepyfile(test_source)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MissingGreenlet*"])
    section = pgharness_section(result)
    assert "Reading `Note.user` needed a database query" in section
    assert "relationship with the default lazy loading" in section
    assert "myapp.py:" in section
    assert 'return {"email": note.user.email}' in section
    assert "inside the app, while handling the request" in section
    assert "await note.awaitable_attrs.user`;" in section  # the Base has AsyncAttrs


def test_a_tests_own_failure_quoting_the_text_gets_no_explanation(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_quotes="""
            import pytest


            def test_fails_with_the_text():
                pytest.fail("expected: greenlet_spawn has not been called; can't call await_()")


            def test_raises_a_lookalike():
                class MissingGreenlet(Exception):
                    pass

                raise MissingGreenlet("not SQLAlchemy's")
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=2)
    assert pgharness_section(result) == ""


def test_a_blocking_call_with_no_attribute_names_the_awaitable_api(
    pytester: pytest.Pytester, database_url: str
) -> None:
    # The sync Session API called from async code: no attribute load is involved, so the
    # explanation points at the call and at the awaitable equivalents.
    write_project(
        pytester,
        database_url,
        conftest=SESSION_FIXTURE,
        test_sync_call="""
            from sqlalchemy import text


            async def test_count_with_the_sync_session(session):
                assert session.sync_session.execute(text("select 1")).scalar() == 1
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MissingGreenlet*"])
    section = pgharness_section(result)
    assert "plain (non-awaited) call" in section
    assert "test_sync_call.py" in section
    assert "await session.execute(...)" in section


def test_a_collection_is_loaded_with_selectinload(pytester: pytest.Pytester) -> None:
    make_project(pytester, PGHARNESS_INI, app=ISOLATION_APP)
    pytester.makepyfile(
        """
        from sqlalchemy import select

        import myapp


        async def test_users_notes(async_db):
            async_db.add(myapp.Note(text="hello", user=myapp.User(email="a@example.com")))
            await async_db.commit()
            async_db.expunge_all()
            user = await async_db.scalar(select(myapp.User))
            assert [note.text for note in user.notes] == ["hello"]
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    section = pgharness_section(result)
    assert "Reading `User.notes` needed a database query" in section
    assert "  - load it in the query: `.options(selectinload(User.notes))`;" in section
    assert "joinedload" not in section
    assert "await user.awaitable_attrs.notes`;" in section


def test_a_def_test_reading_through_db_gets_fixes_without_await(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, PGHARNESS_INI, app=ISOLATION_APP)
    pytester.makepyfile(
        """
        from sqlalchemy import select

        import myapp


        def test_note_shows_its_user(db):
            db.add(myapp.Note(text="hello", user=myapp.User(email="a@example.com")))
            db.commit()
            db.expunge_all()
            note = db.scalar(select(myapp.Note))
            assert note.user.email == "a@example.com"
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    section = pgharness_section(result)
    assert "Reading `Note.user` needed a database query" in section
    assert (
        "  - load it in the query: `db.scalars(select(Note).options(joinedload(Note.user)))`;"
        in section
    )
    assert '  - or load it before reading it: `db.refresh(note, ["user"])`;' in section
    assert "await" not in section.split("How to fix it:", 1)[1]


SYNC_FIXES_APP = """
from sqlalchemy import String
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Book(Base):
    __tablename__ = "book"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    blurb: Mapped[str] = mapped_column(String(50), deferred=True, default="")


engine = create_async_engine("postgresql+asyncpg://app@db.invalid/app")
SessionLocal = async_sessionmaker(engine)  # expire_on_commit left at its default
"""


def test_def_tests_get_fixes_without_await_for_deferred_and_expired_reads(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(myapp=SYNC_FIXES_APP)
    pytester.makefile(
        ".ini",
        pytest="[pytest]\npgharness_schema = myapp:Base\n"
        "pgharness_sessionmakers = myapp:SessionLocal\n",
    )
    pytester.syspathinsert()
    pytester.makepyfile(
        """
        from sqlalchemy import select

        import myapp


        def test_deferred(db):
            db.add(myapp.Book(title="Dune", blurb="sand"))
            db.commit()
            db.expunge_all()
            book = db.scalar(select(myapp.Book))
            assert book.blurb == "sand"


        def test_expired(db):
            book = myapp.Book(title="Dune")
            db.add(book)
            db.commit()
            assert book.title == "Dune"
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    deferred, expired = out.split("test_expired", 1)
    assert (
        "  - load it in the query: `db.scalars(select(Book).options(undefer(Book.blurb)))`;"
        in deferred
    )
    assert '  - or load it before reading it: `db.refresh(book, ["blurb"])`.' in deferred
    assert "  - reload it after the commit: `db.refresh(book)`;" in expired
    assert "  - or create the sessionmaker with `expire_on_commit=False`" in expired
