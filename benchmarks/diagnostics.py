"""What pgharness's diagnostics cost a passing suite.

Generates a passing suite (plain tests, async tests that query PostgreSQL through their own
engine, and parametrized tests), then runs it alternately with pgharness loaded (failure
explanations and the query-limit hooks active) and with ``-p no:pgharness``, several rounds
each, and prints the median wall time of each side and their ratio.

    .venv/bin/python benchmarks/diagnostics.py [--tests 600] [--rounds 5] [--json PATH]

The server is ``PGHARNESS_BENCH_URL`` (default: the local PostgreSQL, trust auth); the
suite's async tests are skipped if it cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import _support

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

CONFTEST = textwrap.dedent(
    """
    import pytest_asyncio
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    URL = {url!r}


    @pytest_asyncio.fixture
    async def connection():
        engine = create_async_engine(URL, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                yield conn
        finally:
            await engine.dispose()
    """
)

PLAIN_TEST = textwrap.dedent(
    """
    import pytest


    def test_plain_{i}():
        assert sum(range({i} + 10)) >= 0


    @pytest.mark.parametrize("n", range(3))
    def test_param_{i}(n):
        assert n * {i} >= 0
    """
)

DB_TEST = textwrap.dedent(
    """
    from sqlalchemy import text


    async def test_query_{i}(connection):
        assert await connection.scalar(text("select {i}")) == {i}
    """
)

INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"


def write_suite(root: Path, tests: int, url: str) -> None:
    (root / "pytest.ini").write_text(INI)
    (root / "conftest.py").write_text(CONFTEST.format(url=url))
    plain = tests * 5 // 6 // 4  # each plain file holds 4 tests
    for i in range(plain):
        (root / f"test_plain_{i}.py").write_text(PLAIN_TEST.format(i=i))
    for i in range(tests - plain * 4):
        (root / f"test_db_{i}.py").write_text(DB_TEST.format(i=i))


def run_suite(root: Path, with_pgharness: bool) -> tuple[float, str]:
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    if not with_pgharness:
        args += ["-p", "no:pgharness"]
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    started = time.perf_counter()
    completed = subprocess.run(args, cwd=root, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"the generated suite did not pass:\n{completed.stdout[-3000:]}")
    return elapsed, completed.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="PATH", help="also write the timings as JSON")
    options = parser.parse_args()
    url = os.environ.get("PGHARNESS_BENCH_URL", DEFAULT_URL)
    with tempfile.TemporaryDirectory(prefix="pgh_bench_diag_") as directory:
        root = Path(directory)
        write_suite(root, options.tests, url)
        _, summary = run_suite(root, with_pgharness=True)  # warm caches (pyc, OS)
        print(f"suite: {summary}")
        timings: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(options.rounds):
            for side in (True, False):  # alternate, so drift hits both sides alike
                timings[side].append(run_suite(root, with_pgharness=side)[0])
    with_, without = (statistics.median(timings[side]) for side in (True, False))
    print(f"{'':28}{'median s':>10}{'min s':>9}{'max s':>9}")
    for label, side in (("pgharness (diagnostics on)", True), ("-p no:pgharness", False)):
        values = timings[side]
        print(f"{label:28}{statistics.median(values):>10.3f}{min(values):>9.3f}{max(values):>9.3f}")
    print(f"ratio with/without: {with_ / without:.3f} ({options.rounds} rounds each)")
    if options.json:
        result = {
            "kind": "diagnostics",
            "tests": options.tests,
            "rounds": options.rounds,
            "summary": summary,
            "wall_s": {"with pgharness": timings[True], "-p no:pgharness": timings[False]},
        }
        _support.write_report(options.json, result)


if __name__ == "__main__":
    main()
