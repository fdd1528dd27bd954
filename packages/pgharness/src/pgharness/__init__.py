"""pgharness: test async SQLAlchemy and FastAPI code against a real PostgreSQL.

Install it and name your schema, sessionmakers and app in ``pyproject.toml``::

    [tool.pytest.ini_options]
    asyncio_mode = "auto"
    asyncio_default_fixture_loop_scope = "function"
    pgharness_schema = "myapp.models:Base"
    pgharness_sessionmakers = ["myapp.db:SessionLocal"]
    pgharness_app = "myapp.main:app"

Every test that asks for ``async_db``, ``async_client``, ``db`` or ``client`` then
runs inside a transaction that is rolled back afterwards, even when the code commits.
The plugin registers itself (entry point ``pytest11``); this module exports what a test
suite may name: the errors pgharness raises (``PgHarnessError`` and its subclasses), the
type of the ``pg_queries`` fixture (``PgQueries``), and ``KeptServer``, the embedded
PostgreSQL for data that outlives a run (an application's development database).
"""

from __future__ import annotations

from ._errors import (
    ConcurrentUseError,
    ConfigurationError,
    CrossLoopError,
    IsolationError,
    PgHarnessError,
    SchemaError,
    ServerError,
    UnmanagedDatabaseError,
)
from ._kept_server import KeptServer
from ._queries import PgQueries

__all__ = [
    "ConcurrentUseError",
    "ConfigurationError",
    "CrossLoopError",
    "IsolationError",
    "KeptServer",
    "PgHarnessError",
    "PgQueries",
    "SchemaError",
    "ServerError",
    "UnmanagedDatabaseError",
]
