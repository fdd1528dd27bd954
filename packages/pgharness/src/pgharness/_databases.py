"""The databases layer: clones of the schema template.

Each worker (or the single process) gets one clone for the run; ``DatabasePool`` keeps a few
more ready in the background for tests that want a whole database of their own, and drops
them once used (a used database is never handed out again). Clones are
named after the run (``_names``), so two runs on one server never collide, and a run that
died is recognised by its advisory lock being free: its clones are dropped by the next run.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._config import mask_url
from ._errors import ServerError
from ._names import CLONE_NAME, RunIdentity, advisory_key

if TYPE_CHECKING:
    import psycopg

    from ._server import ServerAddress

__all__ = [
    "DatabasePool",
    "PgDatabase",
    "clone_strategy",
    "create_clone",
    "drop_database",
    "drop_dead_runs",
]


@dataclass(frozen=True)
class PgDatabase:
    """A PostgreSQL database made by pgharness for this run.

    ``url`` is a SQLAlchemy URL for asyncpg, ``sync_url`` the same database for psycopg; both
    are strings with the password included, ready for ``create_async_engine`` /
    ``create_engine``. ``repr()`` masks the password.

    Example::

        def test_raw_sql(pg_database):
            engine = create_engine(pg_database.sync_url)
            with engine.connect() as conn:
                assert conn.scalar(text("select current_database()")) == pg_database.name
    """

    name: str
    url: str = field(repr=False)
    sync_url: str = field(repr=False)

    def __repr__(self) -> str:
        return f"PgDatabase(name={self.name!r}, url={mask_url(self.url)!r})"

    @classmethod
    def on(cls, address: ServerAddress, name: str) -> PgDatabase:
        return cls(
            name=name,
            url=address.url("postgresql+asyncpg", name),
            sync_url=address.url("postgresql+psycopg", name),
        )


def _ident(name: str) -> str:
    # Every name passed here comes from _names and matches [a-z0-9_]+; quoting is belt and braces.
    assert CLONE_NAME.match(name) or name.startswith("pgh_tpl_"), name
    return '"' + name.replace('"', '""') + '"'


def create_clone(
    conn: psycopg.Connection[tuple[object, ...]],
    name: str,
    template: str,
    *,
    strategy: str | None = None,
) -> None:
    """``CREATE DATABASE name TEMPLATE template``; a leftover of the same name is replaced."""
    from psycopg import errors

    assert strategy in (None, "FILE_COPY", "WAL_LOG"), strategy
    statement = f"CREATE DATABASE {_ident(name)} TEMPLATE {_ident(template)}"
    if strategy is not None:
        statement += f" STRATEGY {strategy}"
    try:
        conn.execute(statement)
    except errors.DuplicateDatabase:
        drop_database(conn, name)
        conn.execute(statement)


def drop_database(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    """Drop one of our own databases, disconnecting whatever is still connected to it."""
    if not CLONE_NAME.match(name):
        raise ValueError(f"refusing to drop {name!r}: not a database pgharness made")
    conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")


def drop_dead_runs(conn: psycopg.Connection[tuple[object, ...]], own_run: str) -> list[str]:
    """Drop the clones of runs that are over (their run lock is free); return their names."""
    names = [
        str(row[0])
        for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pgh\\_%'")
    ]
    runs: dict[str, list[str]] = {}
    for name in names:
        match = CLONE_NAME.match(name)
        if match and match["run"] != own_run:
            runs.setdefault(match["run"], []).append(name)
    dropped: list[str] = []
    for run_id, clones in runs.items():
        key = advisory_key("run", run_id)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not (row and row[0]):
            continue  # that run is alive
        try:
            for name in clones:
                drop_database(conn, name)
                dropped.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return dropped


def hold_run_lock(conn: psycopg.Connection[tuple[object, ...]], run: RunIdentity) -> None:
    """Mark the run alive for as long as ``conn`` is open (shared: every worker holds it)."""
    conn.execute("SELECT pg_advisory_lock_shared(%s)", (advisory_key("run", run.run_id),))


def clone_strategy(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
    """The ``CREATE DATABASE ... STRATEGY`` that clones fastest on this server (None: default).

    PostgreSQL 15+ copies a template block by block through the WAL by default (``WAL_LOG``);
    ``FILE_COPY`` copies the files but takes two checkpoints. Where checkpoints are free
    (``fsync = off``, as on the embedded server) ``FILE_COPY`` clones a small template in half
    the time; where they are durable (a shared server with ``fsync = on``) they cost far more
    than the WAL, so the default stays.
    """
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('fsync')"
    ).fetchone()
    if row is None:
        return None
    version, fsync = int(str(row[0])), str(row[1])
    return "FILE_COPY" if version >= 150000 and fsync == "off" else None


class DatabasePool:
    """Fresh clones of the template, made ahead of time by background threads.

    ``acquire()`` hands out a database nobody has used (waiting only if none is ready);
    ``release()`` gives it back to be dropped; the pool refills itself after each hand-out.
    ``creators`` connections clone in parallel (the server does the copying); a separate
    connection drops released databases when no clone is wanted, so dropping never delays a
    waiting test, and at the latest once ``backlog`` of them wait. ``expected`` (if known) is
    how many databases the run will ask for: the pool makes no more than that in advance.

    Example::

        db = pool.acquire()
        try:
            ...  # connect to db.url, commit freely
        finally:
            pool.release(db)
    """

    def __init__(
        self,
        *,
        address: ServerAddress,
        template: str,
        run: RunIdentity,
        size: int = 2,
        creators: int = 2,
        backlog: int = 8,
        expected: int | None = None,
        drop_on_close: bool = True,
    ) -> None:
        self._drop_on_close = drop_on_close
        self._address = address
        self._template = template
        self._run = run
        self._size = max(1, size)
        self._backlog = max(1, backlog)
        self._expected = expected
        self._numbers = itertools.count(1)
        self._ready: collections.deque[PgDatabase] = collections.deque()
        self._out: set[str] = set()  # handed out, not yet released
        self._to_drop: list[str] = []
        self._dropping = 0
        self._wanted = threading.Condition()
        self._handed_out = 0
        self._started = 0  # clones begun (ready, handed out, or in the making)
        self._making = 0
        self._strategy: str | None = None
        self._strategy_known = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._threads = [
            threading.Thread(target=self._create_loop, name=f"pgharness-pool-{n}", daemon=True)
            for n in range(max(1, creators))
        ]
        self._threads.append(
            threading.Thread(target=self._drop_loop, name="pgharness-pool-drop", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    # -- public ----------------------------------------------------------------------------

    def acquire(self) -> PgDatabase:
        """A fresh clone of the template (blocking, thread-safe)."""
        with self._wanted:
            self._raise_if_broken()
            self._handed_out += 1
            self._wanted.notify_all()
            self._wanted.wait_for(lambda: bool(self._ready) or self._broken())
            self._raise_if_broken()
            database = self._ready.popleft()
            self._out.add(database.name)
            self._wanted.notify_all()  # the dropper may run now that fewer tests wait
            return database

    def release(self, database: PgDatabase) -> None:
        """Discard ``database``: it is dropped in the background, never handed out again."""
        with self._wanted:
            if database.name not in self._out:
                raise ValueError(f"{database.name!r} was not handed out by this pool")
            self._out.discard(database.name)
            self._to_drop.append(database.name)
            self._wanted.notify_all()

    def wait_filled(self, timeout: float = 60) -> bool:
        """Block until the pool holds its target number of ready databases (for measuring)."""
        with self._wanted:
            return self._wanted.wait_for(
                lambda: self._error is not None or len(self._ready) >= self._target_ready(),
                timeout,
            )

    def wait_dropped(self, timeout: float = 60) -> bool:
        """Block until every released database has been dropped (for tests and measuring)."""
        with self._wanted:
            self._backlog, backlog = 1, self._backlog  # drop now, whatever is wanted
            self._wanted.notify_all()
            try:
                return self._wanted.wait_for(
                    lambda: self._error is not None or not (self._to_drop or self._dropping),
                    timeout,
                )
            finally:
                self._backlog = backlog

    def close(self) -> None:
        """Stop the background threads and drop every database the pool made."""
        with self._wanted:
            if self._closed:
                return
            self._closed = True
            self._wanted.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)
        with self._wanted:
            leftovers = [db.name for db in self._ready] + self._to_drop + sorted(self._out)
            self._ready.clear()
            self._to_drop = []
        if leftovers and self._drop_on_close:
            with self._address.connect() as conn:
                for name in leftovers:
                    with contextlib.suppress(Exception):
                        drop_database(conn, name)

    # -- background ------------------------------------------------------------------------

    def _broken(self) -> bool:
        return self._error is not None or self._closed

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise ServerError(
                f"pgharness could not create or drop a pooled database: {self._error}"
            ) from self._error
        if self._closed:
            raise ServerError("pgharness's database pool is closed")

    def _target_ready(self) -> int:
        if self._expected is None:
            return self._size
        return max(0, min(self._size, self._expected - self._handed_out))

    def _needs_more(self) -> bool:
        # Begun but not handed out must cover the target size; never fewer than are asked for.
        wanted = self._handed_out + self._size
        if self._expected is not None:
            wanted = min(wanted, max(self._expected, self._handed_out))
        return self._started < wanted

    def _may_drop(self) -> bool:
        if not self._to_drop:
            return False
        if len(self._to_drop) >= self._backlog:
            return True
        # Otherwise only while no clone is wanted: a drop competes with a clone for the server
        # (DROP DATABASE forces a checkpoint, slow where fsync is on) and for the CPU.
        return self._making == 0 and not self._needs_more()

    def _fail(self, exc: BaseException) -> None:
        with self._wanted:
            if self._error is None:
                self._error = exc
            self._wanted.notify_all()

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        conn = self._address.connect()
        # Held by every connection of the run: the run counts as dead only once the server has
        # ended all of them (a statement of a killed client still finishes).
        try:
            hold_run_lock(conn, self._run)
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_loop(self) -> None:
        try:
            with self._connect() as conn:
                if not self._strategy_known.is_set():
                    with self._wanted:
                        if not self._strategy_known.is_set():
                            self._strategy = clone_strategy(conn)
                            self._strategy_known.set()
                while True:
                    with self._wanted:
                        self._wanted.wait_for(lambda: self._closed or self._needs_more())
                        if self._closed:
                            return
                        self._started += 1
                        self._making += 1
                        name = self._run.pool_database(next(self._numbers))
                    try:
                        create_clone(conn, name, self._template, strategy=self._strategy)
                    finally:
                        with self._wanted:
                            self._making -= 1
                            self._wanted.notify_all()
                    with self._wanted:
                        self._ready.append(PgDatabase.on(self._address, name))
                        self._wanted.notify_all()
        except BaseException as exc:
            self._fail(exc)

    def _drop_loop(self) -> None:
        try:
            with self._connect() as conn:
                while True:
                    with self._wanted:
                        self._wanted.wait_for(lambda: self._closed or self._may_drop())
                        if self._closed:
                            return
                        name = self._to_drop.pop(0)
                        self._dropping += 1
                    try:
                        drop_database(conn, name)
                    finally:
                        with self._wanted:
                            self._dropping -= 1
                            self._wanted.notify_all()
        except BaseException as exc:
            self._fail(exc)
