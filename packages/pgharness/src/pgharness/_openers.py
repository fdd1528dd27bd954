"""What opened a blocked connection, and what to change: the second half of its message.

The blocker knows the dialect of the engine that tried to connect. The engine itself, and the
sessionmakers bound to it, are found among the module globals of imported modules (where apps
keep them: ``engine = create_async_engine(...)``, ``SessionLocal = async_sessionmaker(engine)``),
looked up without calling anything on foreign objects. Which fix applies follows from what
was found: a sessionmaker missing from ``pgharness_sessionmakers``, one used outside a test's
isolation, one whose binding the app changed during the test, an engine used directly, or an
Alembic ``env.py`` that builds its own engine.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._blocker import Policy

__all__ = ["ALEMBIC_ENV_FIX", "Openers", "describe_opener", "find_openers", "user_frames"]

#: The change that makes an ``env.py`` migrate the database pgharness hands it (shown after
#: "Fix: " in messages about an ``env.py`` that connects elsewhere).
ALEMBIC_ENV_FIX = """\
add two lines at the top of run_migrations_online() in env.py, so that it runs the migrations \
on the connection pgharness passes in config.attributes["connection"] (Alembic's cookbook: \
"Sharing a Connection across one or more programmatic migration commands"):

    def run_migrations_online():
        if (connection := config.attributes.get("connection")) is not None:
            return do_run_migrations(connection)  # async env.py: instead of asyncio.run(...)
        ...  # unchanged: your own engine, for `alembic upgrade head` from the command line

    def do_run_migrations(connection):  # Alembic's async template has it; add it to a sync one
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()"""

# Modules whose globals never hold an application's engine.
_SKIPPED_PREFIXES = ("sqlalchemy", "pgharness", "_pytest", "pytest", "pluggy", "alembic")

_FIXTURES = "async_db, db, client, async_client, pg_database, pg_queries"


@dataclass
class Openers:
    """Module globals holding the engine that connected, and sessionmakers bound to it."""

    engines: list[str] = field(default_factory=list)
    sessionmakers: list[str] = field(default_factory=list)


def find_openers(dialect: object | None) -> Openers:
    """``module:attr`` names of the engine using ``dialect`` and of the sessionmakers on it."""
    found = Openers()
    if dialect is None:
        return found
    try:
        from sqlalchemy import Engine
        from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
        from sqlalchemy.orm import sessionmaker
    except ImportError:
        return found
    for module_name, module in sorted(list(sys.modules.items()), key=lambda pair: pair[0]):
        if module_name.startswith(_SKIPPED_PREFIXES) or module is None:
            continue
        try:
            namespace = dict(vars(module))
        except TypeError:
            continue
        for attr, value in namespace.items():
            kind = type(value)
            try:
                if issubclass(kind, Engine | AsyncEngine):
                    if _engine_dialect(value) is dialect:
                        found.engines.append(f"{module_name}:{attr}")
                elif issubclass(kind, sessionmaker | async_sessionmaker):
                    bind = value.kw.get("bind")
                    if bind is not None and _engine_dialect(bind) is dialect:
                        found.sessionmakers.append(f"{module_name}:{attr}")
            except Exception:  # noqa: S112  (a foreign object's class may do anything)
                continue
    return found


def _engine_dialect(value: object) -> object | None:
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    if isinstance(value, AsyncEngine):
        value = value.sync_engine
    if isinstance(value, Engine):
        return value.dialect
    return None


def _preferred(names: list[str], configured: tuple[str, ...]) -> list[str]:
    """Configured names first, then the shortest module paths (where an object is defined,
    rather than each module that imported it)."""
    return sorted(set(names), key=lambda n: (n not in configured, n.count("."), len(n), n))


def describe_opener(
    dialect: object | None,
    policy: Policy,
    *,
    isolated: bool,
    build: tuple[str, Path | None] | None,
    how: str,
) -> str:
    """The lines after the blocked URL: what opened it, from where, and the fix."""
    openers = find_openers(dialect)
    makers = _preferred(openers.sessionmakers, policy.sessionmakers)
    engines = _preferred(openers.engines, ())
    lines: list[str] = []
    if makers or engines:
        what = []
        if engines:
            what.append(f"the engine {engines[0]}")
        if makers:
            what.append(f"the sessionmaker {makers[0]}")
        lines.append("Opened by: " + ", through ".join(reversed(what)) + ".")
    elif dialect is not None:
        lines.append("Opened by: a SQLAlchemy engine no module global holds (made in a function?).")
    else:
        lines.append(f"Opened by: {how}.")
    frames = user_frames(policy.rootpath)
    if frames:
        lines.append("From: " + " <- ".join(frames) + ".")
    lines.append("Fix: " + _fix(makers, engines, dialect, policy, isolated, build, ALEMBIC_ENV_FIX))
    return "\n".join(lines)


def _fix(
    makers: list[str],
    engines: list[str],
    dialect: object | None,
    policy: Policy,
    isolated: bool,
    build: tuple[str, Path | None] | None,
    alembic_env_fix: str,
) -> str:
    if build is not None:
        label, env_py = build
        if env_py is not None:
            return (
                f"this happened while building the template from pgharness_schema = "
                f"{label!r}: {env_py} connects to the database of your own settings instead of "
                "the one pgharness hands it (config.attributes['connection'], and the "
                f"sqlalchemy.url pgharness sets). To fix it, {alembic_env_fix}"
            )
        return (
            f"this happened while building the template from pgharness_schema = {label!r}: "
            "building the schema must not connect anywhere but the database pgharness gives it."
        )
    configured = [m for m in makers if m in policy.sessionmakers]
    missing = [m for m in makers if m not in policy.sessionmakers]
    if missing and not configured:
        wanted = [*policy.sessionmakers, missing[0]]
        listed = ", ".join(f'"{name}"' for name in wanted)
        return (
            f"pgharness hands out sessions inside each test's transaction only through the "
            f"sessionmakers named in pgharness_sessionmakers, and {missing[0]} is not among "
            f"them. Add it in [tool.pytest.ini_options]:\n    pgharness_sessionmakers = "
            f"[{listed}]"
        )
    if configured and isolated:
        return (
            f"{configured[0]} is named in pgharness_sessionmakers and pgharness had bound it to "
            "the test's transaction, but the app bound it to its engine again during the test "
            "(SessionLocal.configure(bind=...) in a lifespan or startup hook?). Bind the "
            "sessionmaker once, where it is created (SessionLocal = async_sessionmaker(engine)), "
            "not while the app starts."
        )
    if configured:
        return (
            f"{configured[0]} is bound to the test's transaction only while a test that uses "
            f"pgharness runs (a test that asks for {_FIXTURES}, or carries "
            "@pytest.mark.pg_isolation); this connection was opened outside one: in a "
            "session-, module- or class-scoped fixture, at import, or in a test that uses none "
            "of those. Do that work in a function-scoped fixture that asks for async_db or db "
            "(or seed the rows in the schema template)."
        )
    if engines or dialect is not None:
        engine = engines[0] if engines else "that engine"
        return (
            f"pgharness rebinds the app's sessionmakers, never its engines: code that uses "
            f"{engine} directly (AsyncSession(bind=engine), engine.connect(), an engine made in "
            "the lifespan) reaches the engine's own database. Get sessions from a sessionmaker "
            "and name it in pgharness_sessionmakers (SessionLocal = async_sessionmaker(engine)); "
            "code that needs connections of its own can connect to pg_database.url under "
            '@pytest.mark.pg_isolation("database").'
        )
    return (
        "connect to the test's database instead: pg_database.url (asyncpg) or "
        "pg_database.sync_url (psycopg), the database pgharness made for this test "
        '(@pytest.mark.pg_isolation("database") gives a test one of its own with real commits).'
    )


# -- where the code that asked is ---------------------------------------------------------------


def user_frames(rootpath: Path | None, limit: int = 3) -> list[str]:
    """``file:line in function`` of the innermost frames of the project's own code that led
    here. In async code SQLAlchemy connects inside a greenlet whose own stack starts at
    SQLAlchemy: the code that awaited it is on the stack of the greenlet's parent."""
    found: list[str] = []
    for frame in _frames_to_here():
        where = _project_location(frame, rootpath)
        if where is not None and where not in found:
            found.append(where)
            if len(found) >= limit:
                break
    return found


def _frames_to_here() -> Iterator[FrameType]:
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        yield frame
        frame = frame.f_back
    greenlet_module = sys.modules.get("greenlet")
    if greenlet_module is None:
        return
    current = greenlet_module.getcurrent()
    for _ in range(8):  # greenlets nest only a few levels deep
        current = getattr(current, "parent", None)
        frame = getattr(current, "gr_frame", None)
        if frame is None:
            return
        while frame is not None:
            yield frame
            frame = frame.f_back


def _project_location(frame: FrameType, rootpath: Path | None) -> str | None:
    filename = frame.f_code.co_filename
    if filename.startswith("<") or "site-packages" in filename or "/pgharness/" in filename:
        return None
    path = Path(filename)
    if rootpath is not None:
        try:
            path = path.relative_to(rootpath)
        except ValueError:
            return None
    elif filename.startswith(sys.prefix) or filename.startswith(sys.base_prefix):
        return None
    return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}"
