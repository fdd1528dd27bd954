"""The databases layer: clones of the schema template.

Each worker (or the single process) gets one clone for the run; ``DatabasePool`` keeps a few
more ready in the background for tests that want a whole database of their own. Clones are
named after the run (``_names``), so two runs on one server never collide, and a run that
died is recognised by its advisory lock being free: its clones are dropped by the next run.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._config import mask_url
from ._errors import ServerError
from ._names import CLONE_NAME, RunIdentity, advisory_key

if TYPE_CHECKING:
    import psycopg

    from ._server import ServerAddress

__all__ = ["DatabasePool", "PgDatabase", "create_clone", "drop_database", "drop_dead_runs"]


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


def create_clone(conn: psycopg.Connection[tuple[object, ...]], name: str, template: str) -> None:
    """``CREATE DATABASE name TEMPLATE template``; a leftover of the same name is replaced."""
    from psycopg import errors

    try:
        conn.execute(f"CREATE DATABASE {_ident(name)} TEMPLATE {_ident(template)}")
    except errors.DuplicateDatabase:
        drop_database(conn, name)
        conn.execute(f"CREATE DATABASE {_ident(name)} TEMPLATE {_ident(template)}")


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


class DatabasePool:
    """Fresh clones of the template, made ahead of time by a background thread.

    ``acquire()`` hands out a database nobody has used (waiting only if the pool is empty);
    ``release()`` gives it back to be dropped; the pool refills itself after each hand-out.

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
        drop_on_close: bool = True,
    ) -> None:
        self._drop_on_close = drop_on_close
        self._address = address
        self._template = template
        self._run = run
        self._size = max(1, size)
        self._numbers = itertools.count(1)
        self._ready: queue.Queue[PgDatabase] = queue.Queue()
        self._to_drop: list[str] = []
        self._wanted = threading.Condition()
        self._handed_out = 0
        self._made = 0
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="pgharness-pool", daemon=True)
        self._thread.start()

    # -- public ----------------------------------------------------------------------------

    def acquire(self) -> PgDatabase:
        """A fresh clone of the template (blocking, thread-safe)."""
        with self._wanted:
            self._raise_if_broken()
            self._handed_out += 1
            self._wanted.notify_all()
        while True:
            try:
                return self._ready.get(timeout=0.2)
            except queue.Empty:
                with self._wanted:
                    self._raise_if_broken()

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise ServerError(
                f"pgharness could not create a pooled database: {self._error}"
            ) from self._error
        if self._closed:
            raise ServerError("pgharness's database pool is closed")

    def release(self, database: PgDatabase) -> None:
        """Discard ``database``: it is dropped in the background."""
        with self._wanted:
            self._to_drop.append(database.name)
            self._wanted.notify_all()

    def wait_filled(self, timeout: float = 60) -> bool:
        """Block until the pool holds its target number of ready databases (for measuring)."""
        with self._wanted:
            return self._wanted.wait_for(
                lambda: self._error is not None or self._ready.qsize() >= self._size, timeout
            )

    def close(self) -> None:
        """Stop the background thread and drop every database the pool made."""
        with self._wanted:
            if self._closed:
                return
            self._closed = True
            self._wanted.notify_all()
        self._thread.join(timeout=60)
        leftovers = [db.name for db in self._drain()]
        with self._wanted:
            leftovers += self._to_drop
            self._to_drop = []
        if leftovers and self._drop_on_close:
            with self._address.connect() as conn:
                for name in leftovers:
                    with contextlib.suppress(Exception):
                        drop_database(conn, name)

    # -- background ------------------------------------------------------------------------

    def _drain(self) -> Iterable[PgDatabase]:
        while True:
            try:
                yield self._ready.get_nowait()
            except queue.Empty:
                return

    def _work(self) -> None:
        try:
            with self._address.connect() as conn:
                # Held by every connection of the run: the run counts as dead only once the
                # server has ended all of them (a statement of a killed client still finishes).
                hold_run_lock(conn, self._run)
                while True:
                    with self._wanted:
                        while not self._closed and not self._to_drop and not self._needs_more():
                            self._wanted.wait()
                        if self._closed:
                            return
                        drops, self._to_drop = self._to_drop, []
                        make = self._needs_more()
                    if make:  # filling comes first: a test may be waiting
                        name = self._run.pool_database(next(self._numbers))
                        create_clone(conn, name, self._template)
                        with self._wanted:
                            self._made += 1
                            self._ready.put(PgDatabase.on(self._address, name))
                            self._wanted.notify_all()
                    for name in drops:
                        drop_database(conn, name)
        except BaseException as exc:
            with self._wanted:
                self._error = exc
                self._wanted.notify_all()

    def _needs_more(self) -> bool:
        # ready + in the making must cover what is waiting plus the target size
        return self._made - self._handed_out < self._size
