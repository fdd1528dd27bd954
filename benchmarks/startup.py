"""pgharness start-up: time to the first test, next to a pytest run with no database.

Runs, interleaved, in one go:

- no database: the same project, its test asks for no pgharness fixture (plugin inert)
- embedded, cold: no initdb cache (a fresh PGHARNESS_CACHE_DIR)
- embedded, warm: initdb cache present (copy + start)
- external: the server at ``--external URL`` (default: PGHARNESS_BENCH_URL, else the
  machine's PostgreSQL); ``--external none`` leaves it out, for a machine without one
- embedded, warm, -n 2: pytest-xdist, time until the first worker's first test

"Time to the first test" is from just before starting ``python -m pytest`` to the moment the
first test body runs. Then the time ``DatabasePool.acquire()`` takes to hand out a database
the warm pool has ready, embedded and external.

    .venv/bin/python benchmarks/startup.py [--repeat 5] [--json PATH]
        [--external postgresql://postgres@127.0.0.1:5432/postgres | --external none]

(``startup.py 5``, the older spelling of ``--repeat 5``, still works.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import _support

URL = os.environ.get("PGHARNESS_BENCH_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
NO_EXTERNAL = "none"
EXTERNAL = "external URL"

MODELS = """
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "bench_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)

class Order(Base):
    __tablename__ = "bench_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("bench_users.id"), index=True)
"""

TEST = """
import os, time, pytest

def _mark():
    path = os.environ["BENCH_FIRST_TEST"]
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another worker got there first
    os.write(fd, repr(time.time()).encode())
    os.close(fd)

@pytest.mark.parametrize("n", range(4))
def test_first({fixture}n):
    _mark()
"""


def _project(root: Path, uses_database: bool) -> Path:
    path = root / ("db" if uses_database else "nodb")
    path.mkdir()
    (path / "models.py").write_text(MODELS)
    (path / "pytest.ini").write_text("[pytest]\npgharness_schema = models:Base\n")
    (path / "test_start.py").write_text(
        TEST.format(fixture="pg_database, " if uses_database else "")
    )
    return path


def _time_to_first_test(project: Path, args: list[str], env: dict[str, str]) -> float:
    mark = project / "first-test"
    mark.unlink(missing_ok=True)
    env = {**env, "BENCH_FIRST_TEST": str(mark)}
    started = time.time()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            *args,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"run failed ({args}):\n{result.stdout}\n{result.stderr}")
    return float(mark.read_text()) - started


# Each scenario's ratio is against the no-database run with the same pytest options.
BASELINE_OF = {
    "no database": "no database",
    "embedded, cold (no initdb cache)": "no database",
    "embedded, warm": "no database",
    EXTERNAL: "no database",
    "no database, -n 2": "no database, -n 2",
    "embedded, warm, -n 2": "no database, -n 2",
}


def _external_address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("repetitions", type=int, nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--external",
        metavar="URL",
        default=URL,
        help=f"the external server's URL, or '{NO_EXTERNAL}' to leave it out (default: {URL})",
    )
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the timings")
    args = parser.parse_args()
    url = None if args.external == NO_EXTERNAL else args.external
    # The positional form (startup.py 3) is the older spelling of --repeat.
    repetitions = args.repetitions if args.repetitions is not None else args.repeat
    if repetitions < 1:
        parser.error("--repeat must be at least 1")

    root = Path(tempfile.mkdtemp(prefix="pgh-bench-"))
    base_env = {k: v for k, v in os.environ.items() if k != "PGHARNESS_URL"}
    nodb, db = _project(root, False), _project(root, True)
    timings: dict[str, list[float]] = {}
    scenarios = {
        "no database": (nodb, [], base_env, False),
        "embedded, cold (no initdb cache)": (db, [], base_env, True),
        "embedded, warm": (db, [], base_env, False),
        EXTERNAL: (db, [f"--pg-url={url}"], base_env, False),
        "no database, -n 2": (nodb, ["-n", "2"], base_env, False),
        "embedded, warm, -n 2": (db, ["-n", "2"], base_env, False),
    }
    baseline_of = dict(BASELINE_OF)
    if url is None:
        del scenarios[EXTERNAL], baseline_of[EXTERNAL]
    try:
        _time_to_first_test(db, [], base_env)  # fill the initdb cache, warm the OS caches
        for _ in range(repetitions):
            for label, (project, options, env, cold) in scenarios.items():
                if cold:
                    cache = root / "cold-cache"
                    shutil.rmtree(cache, ignore_errors=True)
                    env = {**env, "PGHARNESS_CACHE_DIR": str(cache)}
                timings.setdefault(label, []).append(_time_to_first_test(project, options, env))
        handout = _pool_handout_ms(root, url)
    finally:
        if url is not None:
            _drop_templates(url, root, db)
        shutil.rmtree(root, ignore_errors=True)

    external = _external_address(url) if url is not None else None
    where = f"{external} external" if external else "no external server"
    print(f"time to first test, median of {repetitions} (2 cores, {where})")
    print(f"{'scenario':36} {'median s':>9} {'ratio':>7} {'added s':>8}")
    for label, values in timings.items():
        median = statistics.median(values)
        floor_here = statistics.median(timings[baseline_of[label]])
        print(f"{label:36} {median:9.3f} {median / floor_here:6.2f}x {median - floor_here:+8.3f}")
    print("(ratios and added seconds of -n 2 rows are against 'no database, -n 2')")
    for server, values in handout.items():
        median_ms = statistics.median(values)
        print(f"pool hand-out of a ready database, {server}: median {median_ms:.3f} ms")

    if args.json:
        report = {
            "kind": "startup",
            "repeat": repetitions,
            "external": external,
            "timings": timings,
            "handout_ms": handout,
            "baseline_of": baseline_of,
        }
        _support.write_report(args.json, report)


def _drop_templates(url: str, root: Path, db: Path) -> None:
    """Drop the templates the external runs built: the project ``db``'s and the pool's.

    (The hand-out pool has no schema.) Their folders are removed at the end, so no later run
    would reuse them.
    """
    from pgharness._names import project_lineage

    lineages = [project_lineage("models:Base"), project_lineage("")]
    try:
        server = _support.server(url, "--external")
        try:
            with server.address.connect() as admin:
                _support.drop_project_templates(admin, lineages)
        finally:
            server.close()
    except Exception as exc:  # the timings stand; say what is left behind
        print(f"could not drop the benchmark's templates: {exc}", file=sys.stderr)


def _pool_handout_ms(root: Path, url: str | None) -> dict[str, list[float]]:
    """Times of ``DatabasePool.acquire()`` when the pool has refilled, in ms, per server.

    Embedded always; external too when ``url`` is given.
    """
    from pgharness._config import resolve_settings
    from pgharness._harness import Harness
    from pgharness._names import RunIdentity

    results: dict[str, list[float]] = {}
    servers: list[tuple[str, str | None]] = [("embedded", None)]
    if url is not None:
        servers.append(("external", url))
    for server, server_url in servers:
        settings = resolve_settings(
            option_url=server_url,
            ini_url=None,
            ini_schema=None,
            ini_sessionmakers=[],
            ini_app=None,
            rootpath=root,
            environ={},  # "embedded" means embedded, whatever PGHARNESS_URL says
        )
        harness = Harness(settings, RunIdentity.for_process(None))
        try:
            pool = harness.pool
            timings = []
            for _ in range(20):
                pool.wait_filled()
                started = time.perf_counter()
                database = pool.acquire()
                timings.append((time.perf_counter() - started) * 1000)
                pool.release(database)
            results[server] = timings
        finally:
            harness.close()
    return results


if __name__ == "__main__":
    main()
