"""The session-wide harness: server -> template -> this worker's database -> pool.

Made at ``pytest_configure`` from validated settings, it does no IO until something asks for
``worker_database`` or ``pool``; then it starts (or connects to) the server, finds or builds the
template and clones this worker's database, once. A failure is remembered and raised again
to every later caller, so the plugin can stop the run with one message.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING

from ._config import Settings
from ._databases import (
    DatabasePool,
    PgDatabase,
    create_clone,
    drop_database,
    drop_dead_runs,
    hold_run_lock,
)
from ._errors import PgHarnessError, ServerError
from ._names import RunIdentity

if TYPE_CHECKING:
    import psycopg

    from ._server import Server
    from ._template import Template

__all__ = ["Harness"]

# The warm pool for pg_isolation("database"). Measured with benchmarks/isolation.py: a clone
# costs more than a short test, so two connections clone in parallel (the server does the
# copying) and dropping used databases waits until no clone is wanted (or DROP_BACKLOG of
# them wait: they are not left to pile up in memory). The number of ready clones follows
# the number of collected tests that want one, between POOL_SIZE and POOL_MAX_SIZE.
POOL_SIZE = 2
POOL_MAX_SIZE = 8
POOL_CREATORS = 2
DROP_BACKLOG = 8


class Harness:
    """What a pytest process knows about its PostgreSQL: lazily started, closed at the end."""

    def __init__(self, settings: Settings, run: RunIdentity) -> None:
        self.settings = settings
        self.run = run
        self._lock = threading.RLock()
        self._failure: PgHarnessError | None = None
        self._server: Server | None = None
        self._control: psycopg.Connection[tuple[object, ...]] | None = None
        self._template: Template | None = None
        self._worker_database: PgDatabase | None = None
        self._pool: DatabasePool | None = None
        self._database_tests: int | None = None  # collected tests wanting a whole database
        self.startup_seconds: float | None = None
        self.dropped_leftovers: list[str] = []
        self._opening_error: BaseException | None = None

    # -- what fixtures use -----------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._worker_database is not None

    @property
    def worker_database(self) -> PgDatabase:
        """This worker's clone of the template (created on first access)."""
        self.start()
        assert self._worker_database is not None
        return self._worker_database

    @property
    def pool(self) -> DatabasePool:
        """Warm clones for database isolation (its thread starts on first access)."""
        self.start()
        with self._lock:
            if self._pool is None:
                assert self._server is not None
                assert self._template is not None
                expected = self._database_tests
                size = POOL_SIZE if expected is None else expected
                self._pool = DatabasePool(
                    address=self._server.address,
                    template=self._template.name,
                    run=self.run,
                    size=min(max(size, POOL_SIZE), POOL_MAX_SIZE),
                    creators=POOL_CREATORS,
                    backlog=DROP_BACKLOG,
                    # An xdist worker runs an unknown share of them: it keeps the pool full.
                    expected=expected if self.run.worker == "main" else None,
                    drop_on_close=not self._server.disposable,
                )
            return self._pool

    def expect_database_tests(self, count: int) -> None:
        """``count`` collected tests want a whole database: size the pool, start filling it.

        Called once collection is done (after ``start``), so the first clones are made while
        pytest gets to the first test that needs one.
        """
        if count <= 0:
            return
        with self._lock:
            self._database_tests = count
        self.pool  # noqa: B018  (starts the pool's threads)

    @property
    def server(self) -> Server:
        self.start()
        assert self._server is not None
        return self._server

    @property
    def template(self) -> Template:
        self.start()
        assert self._template is not None
        return self._template

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Server, template and worker database, once; raises the same error every time."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._worker_database is not None:
                return
            began = time.perf_counter()
            try:
                self._start()
            except PgHarnessError as exc:
                self._failure = exc
                self._release()
                raise
            except Exception as exc:
                self._failure = ServerError(
                    f"pgharness could not start: {type(exc).__name__}: {exc}"
                )
                self._release()
                raise self._failure from exc
            self.startup_seconds = time.perf_counter() - began

    def _start(self) -> None:
        from ._template import ensure_template, recipe_for

        # The server starts (a subprocess, or a connection) while this thread imports the
        # schema's code and hashes it: the two waits overlap.
        opening = threading.Thread(target=self._open_server, name="pgharness-server")
        opening.start()
        try:
            began = time.perf_counter()
            recipe = recipe_for(
                self.settings.schema, self.settings.rootpath, self.settings.setup_sql
            )
            recipe_seconds = time.perf_counter() - began
        finally:
            opening.join()
        if self._opening_error is not None:
            raise self._opening_error
        assert self._server is not None
        assert self._control is not None
        address = self._server.address
        self._template = ensure_template(
            self._control, address, recipe, recipe_seconds=recipe_seconds
        )
        name = self.run.worker_database
        create_clone(self._control, name, self._template.name)
        self._worker_database = PgDatabase.on(address, name)

    def _open_server(self) -> None:
        from ._embedded import EmbeddedServer
        from ._server import ExternalServer

        try:
            settings = self.settings
            if settings.url is not None:
                setting = {"option": "--pg-url", "env": "PGHARNESS_URL"}.get(
                    settings.url_source, "pgharness_url"
                )
                self._server = ExternalServer(settings.url, setting)
            else:
                self._server = EmbeddedServer(self.run.run_id)
            self._control = control = self._server.address.connect()
            hold_run_lock(control, self.run)
            self.dropped_leftovers = drop_dead_runs(control, self.run.run_id)
        except BaseException as exc:
            self._opening_error = exc

    def close(self) -> None:
        """Drop what this process made, release the locks, leave (maybe stop) the server."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.close()
            self._pool = None
        disposable = self._server is not None and self._server.disposable
        if self._control is not None:
            if self._worker_database is not None and not disposable:
                with contextlib.suppress(Exception):
                    drop_database(self._control, self._worker_database.name)
            with contextlib.suppress(Exception):
                self._control.close()  # releases the advisory locks
            self._control = None
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.close()
            self._server = None

    # -- reporting -------------------------------------------------------------------------

    def status_line(self) -> str | None:
        """``pgharness: embedded PostgreSQL 18.6 at ...; template pgh_tpl_... built in 0.41 s``"""
        if self._worker_database is None or self._template is None or self._server is None:
            return None
        template = self._template
        verb = "reused" if template.reused else "built"
        total = ""
        if self.startup_seconds is not None:
            total = f"; ready in {self.startup_seconds:.2f} s"
        return (
            f"pgharness: {self._server.description}; template {template.name} {verb} "
            f"in {template.seconds:.2f} s{total}"
        )
