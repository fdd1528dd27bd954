"""pgharness start-up: time to the first test, next to a pytest run with no database.

Runs, interleaved, in one go:

- no database: the same project, its test asks for no pgharness fixture (plugin inert)
- embedded, cold: no initdb cache (a fresh PGHARNESS_CACHE_DIR)
- embedded, warm: initdb cache present (copy + start)
- external: the server at PGHARNESS_BENCH_URL (default: the machine's PostgreSQL)
- embedded, warm, -n 2: pytest-xdist, time until the first worker's first test

"Time to the first test" is from just before starting ``python -m pytest`` to the moment the
first test body runs. Usage: ``.venv/bin/python benchmarks/startup.py [repetitions]``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

URL = os.environ.get("PGHARNESS_BENCH_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

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


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    root = Path(tempfile.mkdtemp(prefix="pgh-bench-"))
    base_env = {k: v for k, v in os.environ.items() if k != "PGHARNESS_URL"}
    nodb, db = _project(root, False), _project(root, True)
    timings: dict[str, list[float]] = {}
    scenarios = {
        "no database": (nodb, [], base_env, False),
        "embedded, cold (no initdb cache)": (db, [], base_env, True),
        "embedded, warm": (db, [], base_env, False),
        "external URL": (db, [f"--pg-url={URL}"], base_env, False),
        "no database, -n 2": (nodb, ["-n", "2"], base_env, False),
        "embedded, warm, -n 2": (db, ["-n", "2"], base_env, False),
    }
    try:
        _time_to_first_test(db, [], base_env)  # fill the initdb cache, warm the OS caches
        for _ in range(repetitions):
            for label, (project, args, env, cold) in scenarios.items():
                if cold:
                    cache = root / "cold-cache"
                    shutil.rmtree(cache, ignore_errors=True)
                    env = {**env, "PGHARNESS_CACHE_DIR": str(cache)}
                timings.setdefault(label, []).append(_time_to_first_test(project, args, env))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    handout = _pool_handout_ms(root)
    print(f"time to first test, median of {repetitions} (2 cores, {URL.split('@')[-1]} external)")
    print(f"{'scenario':36} {'median s':>9} {'ratio':>7} {'added s':>8}")
    for label, values in timings.items():
        median = statistics.median(values)
        base = timings["no database, -n 2"] if "-n 2" in label else timings["no database"]
        floor_here = statistics.median(base)
        print(f"{label:36} {median:9.3f} {median / floor_here:6.2f}x {median - floor_here:+8.3f}")
    print("(ratios and added seconds of -n 2 rows are against 'no database, -n 2')")
    for server, values in handout.items():
        median_ms = statistics.median(values)
        print(f"pool hand-out of a ready database, {server}: median {median_ms:.3f} ms")


def _pool_handout_ms(root: Path) -> dict[str, list[float]]:
    """Median time of ``DatabasePool.acquire()`` when the pool has refilled."""
    from pgharness._config import resolve_settings
    from pgharness._harness import Harness
    from pgharness._names import RunIdentity

    results: dict[str, list[float]] = {}
    for server, url in (("embedded", None), ("external", URL)):
        settings = resolve_settings(
            option_url=url,
            ini_url=None,
            ini_schema=None,
            ini_sessionmakers=[],
            ini_app=None,
            rootpath=root,
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
