"""pgharness errors, one hierarchy.

    PgHarnessError
    ├── ConfigurationError      a setting is wrong; the message names the setting and the fix
    ├── ServerError             the PostgreSQL server could not be started or reached
    ├── SchemaError             the schema (create_all or alembic upgrade) could not be built
    ├── IsolationError          a test broke its isolation
    │   ├── CrossLoopError      a connection was used from an event loop other than its own
    │   └── ConcurrentUseError  one connection was used by two tasks at once
    └── UnmanagedDatabaseError  a connection to a database pgharness did not create was stopped

Messages never contain a password: URLs are rendered with ``mask_url`` first.
"""

from __future__ import annotations

__all__ = [
    "ConcurrentUseError",
    "ConfigurationError",
    "CrossLoopError",
    "IsolationError",
    "PgHarnessError",
    "SchemaError",
    "ServerError",
    "UnmanagedDatabaseError",
]


class PgHarnessError(Exception):
    """Base class of every error pgharness raises."""

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.__module__ = "pgharness"  # tracebacks say pgharness.SchemaError, as users import it


PgHarnessError.__module__ = "pgharness"


class ConfigurationError(PgHarnessError):
    """A pgharness setting is missing or wrong."""


class ServerError(PgHarnessError):
    """The PostgreSQL server could not be started or reached."""


class SchemaError(PgHarnessError):
    """The schema could not be built into the template database."""


class IsolationError(PgHarnessError):
    """A test did something that would break the isolation of its database work."""


class CrossLoopError(IsolationError):
    """A connection was used from an event loop other than the one it was opened on."""


class ConcurrentUseError(IsolationError):
    """One connection was used by two tasks at the same time."""


class UnmanagedDatabaseError(PgHarnessError):
    """A connection to a database pgharness did not create was stopped at connect time.

    The message names the URL (password masked), what opened it and the fix.
    """
