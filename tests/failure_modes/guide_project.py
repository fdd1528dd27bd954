"""The troubleshooting guide's project, as source text for pytester.

One small app in the shape the guide had (providers, their OAuth connection, its token; a
service that commits; an ``async_sessionmaker`` with ``expire_on_commit=False``), one test
module, and the five ``conftest.py`` files of the guide's five attempts, each written the way
the guide wrote it. ``PGHARNESS_CONFTEST`` and ``pgharness_ini`` run the same test module
under pgharness instead.

``DATABASE_URL`` in the sources is replaced by the scratch database's asyncpg URL.
"""

from __future__ import annotations

import sys
import textwrap
import types
from dataclasses import dataclass
from functools import cache
from typing import Any

MODELS = """
from sqlalchemy import ForeignKey, String
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Provider(Base):
    __tablename__ = "providers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    connection: Mapped["ProviderConnection | None"] = relationship(back_populates="provider")


class ProviderConnection(Base):
    __tablename__ = "provider_connections"
    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    status: Mapped[str] = mapped_column(String(20))
    provider: Mapped[Provider] = relationship(back_populates="connection")
    token: Mapped["ProviderToken | None"] = relationship(back_populates="connection")


class ProviderToken(Base):
    __tablename__ = "provider_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("provider_connections.id"))
    access_token: Mapped[str] = mapped_column(String(100))
    connection: Mapped[ProviderConnection] = relationship(back_populates="token")
"""

# The application's engine and its one sessionmaker, as Dashtam has them.
DB = """
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

engine = create_async_engine("DATABASE_URL")
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
"""

# A service that owns its transaction: it commits, as Dashtam's services do.
SERVICES = """
from models import Provider, ProviderConnection, ProviderToken


async def connect_provider(session, name):
    provider = Provider(name=name)
    connection = ProviderConnection(provider=provider, status="active")
    session.add_all([provider, connection, ProviderToken(connection=connection, access_token="t1")])
    await session.commit()
    return connection
"""

# The tests every attempt runs, unchanged. The first is the guide's own "Before" example.
TESTS = """
from sqlalchemy import func, select

import services
from models import Provider, ProviderToken


async def test_create_provider(session):
    provider = Provider(name="test")
    session.add(provider)
    await session.commit()
    assert provider.id is not None


async def test_connect_provider_stores_its_token(session):
    connection = await services.connect_provider(session, "schwab")
    assert connection.status == "active"
    token = await connection.awaitable_attrs.token
    assert token.access_token == "t1"


async def test_each_test_starts_with_no_providers(session):
    assert await session.scalar(select(func.count(Provider.id))) == 0
    assert await session.scalar(select(func.count(ProviderToken.id))) == 0
"""

PLAIN_INI = """
[pytest]
asyncio_mode = auto
pythonpath = .
"""


@dataclass(frozen=True)
class Attempt:
    """One of the guide's attempts: its conftest, and the error the guide reported for it."""

    step: int
    title: str
    conftest: str
    documented_error: str


ATTEMPTS = (
    Attempt(
        1,
        "session-scoped event_loop with pooled connections",
        """
import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

engine = create_async_engine("DATABASE_URL")


@pytest.fixture(scope="session")
def event_loop():
    loop = asyncio.get_event_loop_policy().new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
async def session():
    async with AsyncSession(engine) as session:
        yield session
""",
        "attached to a different loop",
    ),
    Attempt(
        2,
        "NullPool with session-scoped async fixtures",
        """
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

engine = create_async_engine(
    "DATABASE_URL",
    poolclass=NullPool
)


@pytest.fixture(scope="session")
async def session():
    async with AsyncSession(engine) as session:
        yield session
""",
        "attached to a different loop",
    ),
    Attempt(
        3,
        "NullPool with manual transaction wrapping",
        """
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

engine = create_async_engine("DATABASE_URL", poolclass=NullPool)


@pytest.fixture
async def session():
    async with engine.connect() as connection:
        async with connection.begin():
            session = AsyncSession(bind=connection)
            yield session
""",
        "MissingGreenlet",
    ),
    Attempt(
        4,
        "nested transactions with savepoints",
        """
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

engine = create_async_engine("DATABASE_URL", poolclass=NullPool)


@pytest.fixture
async def session():
    async with engine.connect() as connection:
        await connection.begin()
        session = AsyncSession(bind=connection, expire_on_commit=False)
        await session.begin_nested()

        @event.listens_for(session.sync_session, "after_transaction_end")
        def restart_savepoint(sync_session, transaction):
            if transaction.nested and not transaction._parent.nested:
                sync_session.expire_all()
                sync_session.begin_nested()

        yield session
        await session.close()
        await connection.rollback()
""",
        "MissingGreenlet",
    ),
    Attempt(
        5,
        "clean session without transaction wrapping",
        """
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

engine = create_async_engine("DATABASE_URL", poolclass=NullPool)


@pytest.fixture
async def session():
    session = AsyncSession(engine)
    try:
        yield session
    finally:
        await session.rollback()
        await session.close()
""",
        "MissingGreenlet",
    ),
)

# Under pgharness the test module keeps its ``session`` argument: it is ``async_db``, a
# session from the app's own SessionLocal inside the test's rolled-back transaction.
PGHARNESS_CONFTEST = """
import pytest


@pytest.fixture
def session(async_db):
    return async_db
"""


def pgharness_ini(server_url: str) -> str:
    """The same project's ini, with pgharness configured (and nothing else changed)."""
    return textwrap.dedent(
        f"""
        [pytest]
        asyncio_mode = auto
        pythonpath = .
        pgharness_url = {server_url}
        pgharness_schema = models:Base
        pgharness_sessionmakers = db:SessionLocal
        """
    )


def app_sources(database_url: str) -> dict[str, str]:
    """models, db, services and the test module, for ``pytester.makepyfile``."""
    files = {"models": MODELS, "db": DB, "services": SERVICES, "test_providers": TESTS}
    return {name: text.replace("DATABASE_URL", database_url) for name, text in files.items()}


@cache
def models_metadata() -> Any:
    """The ``MetaData`` of ``MODELS``, to create the project's tables from the outer run."""
    module = types.ModuleType("dashtam_guide_models")
    sys.modules[module.__name__] = module  # SQLAlchemy resolves annotations in the module
    exec(MODELS, module.__dict__)
    return module.Base.metadata
