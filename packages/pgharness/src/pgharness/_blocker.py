"""The blocker: while pgharness is active, no connection reaches a database it did not create.

pytest-django's approach, for PostgreSQL drivers: every way a test process opens a connection
passes one check at connect time, before any byte reaches a server:

- SQLAlchemy engines, async and sync, whatever their pool (the ``do_connect`` dialect event,
  listened on every engine);
- asyncpg and psycopg connections however they are asked for (``asyncpg.connect``, its pools,
  ``psycopg.connect`` / ``psycopg.AsyncConnection.connect``, psycopg's pools, a ``connect``
  imported by name before the blocker was on): hooked where every one of them passes;
- psycopg2 and pg8000, when installed (``psycopg2.connect``, pg8000's ``connect`` and
  ``native.Connection``), so that an engine's ``creator=`` calling them is stopped as well.

A connection is let through when it goes to a database pgharness named itself (``_names``:
template, worker clone, pooled clone), when pgharness opens it for its own work
(``internal()``: control connections to the maintenance database), or when the user listed the
database in ``pgharness_allow_urls``. Anything else raises ``UnmanagedDatabaseError``, naming the
URL (password masked), the engine or sessionmaker that opened it where a module global holds
it, the code that asked, and the fix. Each blocked attempt is also remembered, so a test whose
app swallowed the error (a 500, a retry loop) still fails.

The blocker is on from ``activate`` to ``deactivate``: when a setting activates pgharness,
from before the first ``conftest.py`` loads (an app imported there may connect at import time)
to the run's unconfigure; otherwise from the first test that uses pgharness. Before that, a run
with no setting is only ``watch``ed: connections pass, but those that would have been stopped
are remembered, and ``activate`` returns them so that the run can stop loudly instead of
passing after code wrote to a database pgharness did not create (at import, during collection).
Nested pytest runs in one process stack their policies; the innermost decides.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.abc
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._config import ServerUrl
from ._errors import UnmanagedDatabaseError
from ._names import CLONE_NAME, TEMPLATE_NAME
from ._openers import describe_opener, user_frames

__all__ = [
    "BlockedConnection",
    "Destination",
    "EscapedConnection",
    "Policy",
    "activate",
    "blocked_since",
    "deactivate",
    "internal",
    "is_active",
    "template_build",
    "test_isolation",
    "watch",
]

_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class Destination:
    """Where a connection would go, as the driver would resolve it."""

    host: str | None
    port: int | None
    database: str
    user: str | None

    @property
    def masked_url(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = self.host or ""
        if host.startswith("/"):  # a socket directory: libpq's URL form puts it in the query
            port = f"&port={self.port}" if self.port else ""
            return f"postgresql://{user}/{self.database}?host={host}{port}"
        port = f":{self.port}" if self.port else ""
        return f"postgresql://{user}{host}{port}/{self.database}"

    def is_pgharness_database(self) -> bool:
        return bool(CLONE_NAME.match(self.database) or TEMPLATE_NAME.match(self.database))

    def matches(self, allowed: ServerUrl) -> bool:
        """Whether ``allowed`` (a ``pgharness_allow_urls`` entry) names this database."""
        if allowed.database and allowed.database != self.database:
            return False
        if allowed.username and self.user and allowed.username != self.user:
            return False
        if (allowed.port or 5432) != (self.port or 5432):
            return False
        return _same_host(_allowed_host(allowed), self.host)


def _allowed_host(allowed: ServerUrl) -> str | None:
    for key, value in allowed.query:
        if key == "host":
            return value
    return allowed.host


def _same_host(a: str | None, b: str | None) -> bool:
    def local(host: str | None) -> bool:
        return host is None or host in _LOCAL_HOSTS or host.startswith("/")

    if local(a) and local(b):
        return True
    return (a or "").lower() == (b or "").lower()


@dataclass(frozen=True)
class Policy:
    """What one pytest run allows, and what its messages can name."""

    allow: tuple[ServerUrl, ...] = ()
    #: ``module:attr`` of the sessionmakers named in ``pgharness_sessionmakers``.
    sessionmakers: tuple[str, ...] = ()
    rootpath: Path | None = None


@dataclass(frozen=True)
class BlockedConnection:
    """One connection the blocker stopped, with the message it raised."""

    destination: Destination
    message: str


@dataclass(frozen=True)
class EscapedConnection:
    """A connection let through while a run was only watched, that the blocker would stop."""

    destination: Destination
    how: str
    #: ``file:line in function`` of the project's code that asked, innermost first.
    frames: tuple[str, ...]

    def describe(self) -> str:
        where = f", from {' <- '.join(self.frames)}" if self.frames else ""
        return f"{self.destination.masked_url}, opened by {self.how}{where}"


# A watched run remembers this many escapes in full (and counts the rest): enough to name the
# culprits without a run that is not using pgharness paying for many connections.
_ESCAPES_KEPT = 5


@dataclass
class _Run:
    """One pytest run's place on the stack: its policy, and whether it blocks or only watches."""

    policy: Policy
    blocking: bool
    escaped: list[EscapedConnection] = field(default_factory=list)
    escaped_count: int = 0


@dataclass
class _State:
    lock: threading.RLock = field(default_factory=threading.RLock)
    runs: list[_Run] = field(default_factory=list)
    restore: list[Callable[[], None]] = field(default_factory=list)
    blocked: list[BlockedConnection] = field(default_factory=list)
    #: The template being built (a label, and the Alembic env.py when there is one).
    build: tuple[str, Path | None] | None = None
    #: How many tests have their isolation in place right now (sessionmakers rebound).
    isolated_tests: int = 0


_state = _State()
_internal = threading.local()


# -- switching on and off ----------------------------------------------------------------------


def watch(policy: Policy) -> None:
    """Let connections through for the run of ``policy``, remembering those ``activate`` would
    have stopped."""
    _push(_Run(policy, blocking=False))


def activate(policy: Policy) -> tuple[list[EscapedConnection], int]:
    """Turn the blocker on with ``policy``. When the run was watched until now, returns what
    escaped meanwhile: the first few connections in full, and how many there were."""
    with _state.lock:
        run = _run_of(policy)
        if run is None:
            _push(_Run(policy, blocking=True))
            return [], 0
        escaped, count = (list(run.escaped), run.escaped_count) if not run.blocking else ([], 0)
        run.blocking = True
        run.escaped.clear()
        run.escaped_count = 0
        return escaped, count


def deactivate(policy: Policy) -> None:
    """Undo one ``watch`` or ``activate``; the hooks come off with the last run."""
    with _state.lock:
        run = _run_of(policy)
        if run is not None:
            _state.runs.remove(run)
        if not _state.runs:
            while _state.restore:
                _state.restore.pop()()


def is_active() -> bool:
    with _state.lock:
        return bool(_state.runs) and _state.runs[-1].blocking


def _push(run: _Run) -> None:
    with _state.lock:
        _state.runs.append(run)
        if len(_state.runs) == 1:
            _install_hooks()


def _run_of(policy: Policy) -> _Run | None:
    # By identity, innermost first: nested runs may hold equal policies.
    return next((run for run in reversed(_state.runs) if run.policy is policy), None)


@contextlib.contextmanager
def internal() -> Iterator[None]:
    """pgharness's own connections (maintenance database, server checks) on this thread."""
    depth = getattr(_internal, "depth", 0)
    _internal.depth = depth + 1
    try:
        yield
    finally:
        _internal.depth = depth


@contextlib.contextmanager
def template_build(label: str, alembic_env: Path | None = None) -> Iterator[None]:
    """Mark the template build: a blocked connection's message then names the build and, for an
    Alembic ``env.py`` (``alembic_env``), the change that hands it pgharness's connection."""
    with _state.lock:
        previous, _state.build = _state.build, (label, alembic_env)
    try:
        yield
    finally:
        with _state.lock:
            _state.build = previous


@contextlib.contextmanager
def test_isolation() -> Iterator[None]:
    """A test's isolation is in place (its sessionmakers are rebound) while this is open."""
    with _state.lock:
        _state.isolated_tests += 1
    try:
        yield
    finally:
        with _state.lock:
            _state.isolated_tests -= 1


test_isolation.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def blocked_since(mark: int) -> list[BlockedConnection]:
    """Connections blocked after ``mark`` (``blocked_count()`` taken earlier)."""
    with _state.lock:
        return list(_state.blocked[mark:])


def blocked_count() -> int:
    with _state.lock:
        return len(_state.blocked)


# -- the check ---------------------------------------------------------------------------------


def check(destination: Destination, how: str, dialect: object | None = None) -> None:
    """Raise ``UnmanagedDatabaseError`` unless ``destination`` is allowed now."""
    if getattr(_internal, "depth", 0) or destination.is_pgharness_database():
        return
    with _state.lock:
        if not _state.runs:
            return
        run = _state.runs[-1]
        policy = run.policy
        build = _state.build
        isolated = _state.isolated_tests > 0
    if any(destination.matches(allowed) for allowed in policy.allow):
        return
    if not run.blocking:
        _remember_escape(run, destination, how)
        return
    opener = describe_opener(dialect, policy, isolated=isolated, build=build, how=how)
    message = (
        f"pgharness stopped a connection to {destination.masked_url}: pgharness is active in "
        "this run, and it did not create that database, so writes there would be real (it may "
        f"be your development database).\n{opener}\nTo reach that database on purpose, list it "
        "in pgharness_allow_urls."
    )
    with _state.lock:
        _state.blocked.append(BlockedConnection(destination, message))
    raise UnmanagedDatabaseError(message)


def _remember_escape(run: _Run, destination: Destination, how: str) -> None:
    with _state.lock:
        if run.escaped_count >= _ESCAPES_KEPT:
            run.escaped_count += 1
            return
    frames = tuple(user_frames(run.policy.rootpath))
    with _state.lock:
        # One connection can pass two hooks (an engine's do_connect, then its driver's).
        if any(e.destination == destination and e.frames == frames for e in run.escaped):
            return
        run.escaped_count += 1
        if len(run.escaped) < _ESCAPES_KEPT:
            run.escaped.append(EscapedConnection(destination, how, frames))


def escaped_before_activation_message(escaped: list[EscapedConnection], count: int) -> str:
    """Why a run that was only watched stops when pgharness becomes active in it."""
    listed = "\n".join(f"  {connection.describe()}" for connection in escaped)
    more = f"\n  ... and {count - len(escaped)} more" if count > len(escaped) else ""
    return (
        "pgharness stopped the run: before it became active, code in this run connected to a "
        "database pgharness did not create, so anything written there was real (it may be your "
        f"development database):\n{listed}{more}\n"
        "pgharness became active only when it found tests that use its fixtures: with no "
        "pgharness_* setting it cannot stop connections made earlier, at import or while tests "
        "are collected. Fix: set pgharness_sessionmakers in [tool.pytest.ini_options] (the "
        "sessionmakers your app gets its sessions from), so that the blocker is on before the "
        "first conftest.py loads and such a connection fails before it is made; better still, "
        "make the app connect when it is used rather than when it is imported. To reach that "
        "database on purpose, list it in pgharness_allow_urls."
    )


def _default_user() -> str | None:
    user = os.environ.get("PGUSER")
    if user:
        return user
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return None


def destination_from(params: dict[str, Any]) -> Destination:
    """Resolve libpq-style parameters (``dbname``/``database``, ``host``, ``port``, ``user``)
    the way the drivers do, environment defaults included."""
    user = params.get("user") or _default_user()
    database = params.get("dbname") or params.get("database") or os.environ.get("PGDATABASE")
    host = params.get("host") or os.environ.get("PGHOST")
    port_text = params.get("port") or os.environ.get("PGPORT")
    try:
        port = int(str(port_text).split(",")[0]) if port_text else None
    except ValueError:
        port = None
    return Destination(
        host=str(host).split(",")[0] if host else None,
        port=port,
        database=str(database or user or ""),
        user=str(user) if user else None,
    )


def _parse_dsn(dsn: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return dict(conninfo_to_dict(dsn))
    except Exception:
        return {}


def _params_of_call(dsn: object, kwargs: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = _parse_dsn(dsn) if isinstance(dsn, str) and dsn else {}
    params.update({k: v for k, v in kwargs.items() if v is not None})
    return params


# -- hooks -------------------------------------------------------------------------------------


def _install_hooks() -> None:
    _hook_sqlalchemy()
    _hook_asyncpg()  # pgharness imports asyncpg itself
    # The other drivers are hooked when they are imported (no connection can be made before),
    # so that a run that never imports them does not pay for importing them.
    _when_imported("psycopg", _hook_psycopg)
    _when_imported("psycopg2", _hook_psycopg2)
    _when_imported("pg8000.core", _hook_pg8000)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``then`` right after module ``name`` is first imported."""

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name = name
        self.then = then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # find the real spec without finding ourselves
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader, then = spec.loader, self.then

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                module.__loader__ = module.__spec__.loader = loader  # the real one, from now on
                loader.exec_module(module)
                then()

        spec.loader = _Loader()
        return spec


def _when_imported(name: str, hook: Callable[[], None]) -> None:
    if name in sys.modules:
        hook()
        return
    finder = _AfterImport(name, hook)
    sys.meta_path.insert(0, finder)

    def restore() -> None:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)

    _state.restore.append(restore)


def _replace(owner: Any, name: str, new: Any) -> None:
    """Set ``owner.name`` (a module's or a class's own attribute) to ``new`` until the hooks
    come off."""
    original = vars(owner)[name]
    setattr(owner, name, new)
    _state.restore.append(lambda: setattr(owner, name, original))


def _on_do_connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
    dsn = cargs[0] if cargs and isinstance(cargs[0], str) else None
    check(destination_from(_params_of_call(dsn, dict(cparams))), "engine", dialect)


def _hook_sqlalchemy() -> None:
    from sqlalchemy import Engine, event

    event.listen(Engine, "do_connect", _on_do_connect)
    _state.restore.append(lambda: event.remove(Engine, "do_connect", _on_do_connect))


def _hook_asyncpg() -> None:
    # Every asyncpg connection, however it was reached (``asyncpg.connect``, a name bound by
    # ``from asyncpg import connect`` before pgharness started, a pool, which keeps the
    # ``connect`` of the moment it was made), goes through ``connect_utils._connect``, looked up
    # on its module at each call.
    try:
        from asyncpg import connect_utils
    except ImportError:
        return
    original = connect_utils._connect

    async def _connect(**kwargs: Any) -> Any:
        dsn = kwargs.get("dsn")
        given = {key: value for key, value in kwargs.items() if key in _ASYNCPG_PARAMETERS}
        check(destination_from(_params_of_call(dsn, given)), "asyncpg.connect()")
        return await original(**kwargs)

    _replace(connect_utils, "_connect", _connect)


# The parameters of ``asyncpg.connect`` that say where it goes.
_ASYNCPG_PARAMETERS = frozenset({"host", "port", "user", "database"})


def _hook_psycopg() -> None:
    # ``connect`` of both connection classes asks ``cls._get_connection_params`` (looked up at
    # each call) for the parameters it will use: hooking that catches a ``connect`` taken by
    # name before pgharness started, psycopg_pool's connections and subclasses alike.
    import psycopg  # imported already: this runs when it is

    sync_original = psycopg.Connection.__dict__["_get_connection_params"]
    async_original = psycopg.AsyncConnection.__dict__["_get_connection_params"]

    def sync_params(cls: Any, /, conninfo: str, **kwargs: Any) -> Any:
        check(destination_from(_params_of_call(conninfo, kwargs)), "psycopg.connect()")
        return sync_original.__func__(cls, conninfo, **kwargs)

    async def async_params(cls: Any, /, conninfo: str, **kwargs: Any) -> Any:
        check(
            destination_from(_params_of_call(conninfo, kwargs)),
            "psycopg.AsyncConnection.connect()",
        )
        return await async_original.__func__(cls, conninfo, **kwargs)

    _replace(psycopg.Connection, "_get_connection_params", classmethod(sync_params))
    _replace(psycopg.AsyncConnection, "_get_connection_params", classmethod(async_params))


def _hook_psycopg2() -> None:
    # ``psycopg2.connect`` (however it was imported) builds a libpq string and hands it to the
    # module's ``_connect``, looked up at each call.
    import psycopg2  # imported already: this runs when it is

    original = psycopg2._connect

    def _connect(dsn: str, *args: Any, **kwargs: Any) -> Any:
        check(destination_from(_params_of_call(dsn, {})), "psycopg2.connect()")
        return original(dsn, *args, **kwargs)

    _replace(psycopg2, "_connect", _connect)


def _hook_pg8000() -> None:
    # Every pg8000 connection (``pg8000.connect``, ``pg8000.dbapi``, ``pg8000.native``) is a
    # ``CoreConnection`` whose ``__init__`` opens the socket.
    from pg8000.core import CoreConnection  # imported already: this runs when it is

    original = CoreConnection.__init__

    def __init__(self: Any, user: str, *args: Any, **kwargs: Any) -> None:
        params = dict(zip(("host", "database", "port"), args, strict=False))
        params.update({k: kwargs[k] for k in ("host", "database", "port") if k in kwargs})
        if kwargs.get("unix_sock"):
            params["host"] = os.path.dirname(kwargs["unix_sock"])
        params.setdefault("host", "localhost")
        params.setdefault("port", 5432)
        check(destination_from({"user": user, **params}), "pg8000.connect()")
        original(self, user, *args, **kwargs)

    _replace(CoreConnection, "__init__", __init__)
