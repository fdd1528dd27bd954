# ruff: noqa: E501  (the app source is easier to read unwrapped)
"""A small async app used by the isolation, client, loop and sync tests (written by pytester).

``myapp`` has the shape pgharness is for: a FastAPI app, an ``async_sessionmaker`` with the
app's own options, services that open their own sessions and commit, a relationship that
is lazy (so a lazy load fails in async code), a lifespan, background tasks. Its engine points
at a host that does not exist: if anything reached it, the test would fail.
"""

from __future__ import annotations

import textwrap
import warnings

# Imported here, in the outer process, so pytester's in-process runs never re-import these C
# extensions after restoring sys.modules (re-importing asyncpg's protocol crashes).
import asyncpg  # noqa: F401
import fastapi  # noqa: F401
import greenlet  # noqa: F401
import httpx  # noqa: F401
import psycopg  # noqa: F401
import pytest
import sqlalchemy.ext.asyncio  # noqa: F401

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    import starlette.testclient  # noqa: F401

APP = textwrap.dedent(
    """
    from __future__ import annotations

    from contextlib import asynccontextmanager

    from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request
    from sqlalchemy import ForeignKey, String, func, select
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.ext.asyncio import AsyncAttrs, AsyncSession, async_sessionmaker, create_async_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


    class Base(AsyncAttrs, DeclarativeBase):
        pass


    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(String(200), unique=True)
        notes: Mapped[list[Note]] = relationship(back_populates="user")


    class Note(Base):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
        text: Mapped[str] = mapped_column(String(200))
        user: Mapped[User] = relationship(back_populates="notes")


    # Production settings: tests must never reach this host.
    engine = create_async_engine("postgresql+asyncpg://app@db.invalid:5432/production")
    SessionLocal = async_sessionmaker(engine, expire_on_commit=False, info={"app": "myapp"})


    async def create_user(email: str) -> User:
        async with SessionLocal() as session:
            user = User(email=email)
            session.add(user)
            await session.commit()
            return user


    async def count_users() -> int:
        async with SessionLocal() as session:
            return int(await session.scalar(select(func.count(User.id))) or 0)


    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.users_at_startup = await count_users()
        yield {"greeting": "hello"}


    app = FastAPI(lifespan=lifespan)


    async def get_session():
        async with SessionLocal() as session:
            yield session


    @app.post("/users", status_code=201)
    async def post_user(body: dict, session: AsyncSession = Depends(get_session)):
        user = User(email=body["email"])
        session.add(user)
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            raise HTTPException(409, "email taken") from None
        return {"id": user.id, "email": user.email}


    @app.get("/users/count")
    async def get_count(session: AsyncSession = Depends(get_session)):
        return {"count": int(await session.scalar(select(func.count(User.id))) or 0)}


    @app.post("/users/later", status_code=202)
    async def post_later(body: dict, tasks: BackgroundTasks):
        tasks.add_task(create_user, body["email"])
        return {}


    @app.get("/state")
    async def get_state(request: Request):
        return {"greeting": request.state.greeting, "at_startup": request.app.state.users_at_startup}
    """
)

INI = """
[pytest]
pgharness_schema = myapp:Base
pgharness_sessionmakers = myapp:SessionLocal
pgharness_app = myapp:app
{extra}
"""


def make_project(pytester: pytest.Pytester, extra_ini: str = "", app: str = APP) -> None:
    """Write ``myapp.py`` and a ``pytest.ini`` naming it for pgharness."""
    pytester.makepyfile(myapp=app)
    pytester.makefile(".ini", pytest=INI.format(extra=textwrap.dedent(extra_ini)))
    pytester.syspathinsert()
