"""Dashtam's own suite in its two styles, side by side: sync (``client``/``db``) and async.

pgharness runs a test in either style: ``def test_…(client, db)`` (Starlette's ``TestClient``
on pgharness's loop thread, a blocking session over the app's transaction) or
``async def test_…(async_client, async_db)`` (``httpx.AsyncClient``, ``AsyncSession``). This
runs, interleaved, ``--repeat`` times, each with ``-p no:randomly -p no:cacheprovider`` in a
subprocess from the repository root:

- sync key flows: ``tests/api/test_key_flows.py``, the sync twin of
- async key flows: ``tests/api_async/test_key_flows.py`` (same flows, requests and checks)
- sync suite: ``tests/api``, every sync-style HTTP test, without
  ``test_database_restart.py`` (not an HTTP test: it runs ``benchmarks/load.py --faults``,
  its own PostgreSQL and ``dashtam serve``, for several seconds, in a subprocess)
- async suite: ``tests/api_async tests/integration``

For each run: the wall time of the whole pytest command (interpreter start, collection,
PostgreSQL start, template, tests, shutdown) and the test phase, from the first test's start to
the last test's end, measured by a small timer plugin (``-p``, from a temporary folder on
PYTHONPATH; under xdist only the controller writes it). The key flows are the same tests in
both styles, so their ratio (async/sync) is like for like. The two suites hold different tests:
they are compared per test (ms per test), not by a ratio of their totals. A warm-up run of the
sync key flows comes first and is not recorded (OS caches, initdb cache, bytecode).

Like ``make test``, PGHARNESS_URL is unset, so each run starts its own embedded PostgreSQL;
``--url URL`` puts the test databases on that server instead (``--pg-url URL``).

Usage::

    .venv/bin/python benchmarks/styles.py                      # --repeat 3, embedded
    .venv/bin/python benchmarks/styles.py --repeat 5 --json styles.json
    .venv/bin/python benchmarks/styles.py --url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/styles.py --workers 2           # each pytest run with -n 2

``--json PATH`` writes ``{"kind": "styles", "repeat": K, "server": "embedded" or the host,
"runs": {label: {"tests": n, "wall_s": [...], "tests_s": [...]}}}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import _support

REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    label: str
    args: tuple[str, ...]


SYNC_FLOWS = Target("sync key flows", ("tests/api/test_key_flows.py",))
ASYNC_FLOWS = Target("async key flows", ("tests/api_async/test_key_flows.py",))
SYNC_SUITE = Target("sync suite", ("tests/api", "--ignore=tests/api/test_database_restart.py"))
ASYNC_SUITE = Target("async suite", ("tests/api_async", "tests/integration"))
TARGETS = (SYNC_FLOWS, ASYNC_FLOWS, SYNC_SUITE, ASYNC_SUITE)


@dataclass
class Runs:
    """Every recorded run of one target."""

    tests: int = 0
    wall_s: list[float] = field(default_factory=list)
    tests_s: list[float] = field(default_factory=list)
    per_test_s: dict[str, list[float]] = field(default_factory=dict)

    def ms_per_test(self) -> float:
        return statistics.median(self.tests_s) / self.tests * 1000


def _environment(plugin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PGHARNESS_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_dir), env.get("PYTHONPATH")]))
    return env


def _pytest_args(target: Target, url: str | None, workers: int) -> list[str]:
    args = list(target.args)
    if url:
        args.append(f"--pg-url={url}")
    if workers:
        args += ["-n", str(workers)]
    return args


def _run(target: Target, args: list[str], env: dict[str, str], out: Path) -> _support.TimedRun:
    done = _support.run_timed(args, REPOSITORY, env, out)
    if not done.passed:
        done.fail(f"{target.label}: pytest exited {done.returncode}: {' '.join(done.command)}")
    return done


def _record(runs: Runs, target: Target, timing: _support.TimedRun) -> None:
    if runs.tests and runs.tests != len(timing.per_test_s):
        raise SystemExit(f"{target.label}: {len(timing.per_test_s)} tests, earlier {runs.tests}")
    runs.tests = len(timing.per_test_s)
    runs.wall_s.append(timing.wall_s)
    runs.tests_s.append(timing.tests_s)
    for nodeid, seconds in timing.per_test_s.items():
        runs.per_test_s.setdefault(nodeid, []).append(seconds)


def _measure(repeat: int, url: str | None, workers: int) -> dict[str, Runs]:
    results = {target.label: Runs() for target in TARGETS}
    with tempfile.TemporaryDirectory(prefix="dashtam-styles-") as tmp:
        plugin_dir = Path(tmp)
        _support.write_timer(plugin_dir)
        env = _environment(plugin_dir)
        out = plugin_dir / "timing.json"
        _run(SYNC_FLOWS, _pytest_args(SYNC_FLOWS, url, workers), env, out)  # warm-up, not recorded
        for round_number in range(1, repeat + 1):
            for target in TARGETS:
                timing = _run(target, _pytest_args(target, url, workers), env, out)
                _record(results[target.label], target, timing)
                print(
                    f"  round {round_number}/{repeat} {target.label:16}"
                    f" wall {timing.wall_s:7.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def _test_name(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def _report(results: dict[str, Runs], repeat: int, server: str, workers: int) -> list[str]:
    runs_in = f"{workers} xdist workers" if workers else "no xdist"
    lines = [
        f"Dashtam's suite, sync style vs async style: server {server}, {runs_in},"
        f" median of {repeat} interleaved run(s)",
        "(wall: the whole pytest command; test phase: first test start to last test end)",
        "",
        f"{'':16} {'tests':>5} {'wall s':>8} {'test phase s':>13} {'ms/test':>8}",
    ]
    for label, runs in results.items():
        lines.append(
            f"{label:16} {runs.tests:5d} {statistics.median(runs.wall_s):8.2f}"
            f" {statistics.median(runs.tests_s):13.3f} {runs.ms_per_test():8.1f}"
        )

    sync, asynchronous = results[SYNC_FLOWS.label], results[ASYNC_FLOWS.label]
    lines += [
        "",
        f"Key flows, the same {sync.tests} flows in each style, async/sync:"
        f" {asynchronous.ms_per_test() / sync.ms_per_test():.2f}x per test (test phase),"
        f" {statistics.median(asynchronous.wall_s) / statistics.median(sync.wall_s):.2f}x wall",
        f"{'  test (median ms, setup + call + teardown)':56} {'sync':>7} {'async':>7} {'ratio':>6}",
    ]
    sync_tests = {_test_name(n): statistics.median(s) for n, s in sync.per_test_s.items()}
    async_tests = {_test_name(n): statistics.median(s) for n, s in asynchronous.per_test_s.items()}
    for name in sorted(sync_tests.keys() | async_tests.keys()):
        sync_ms, async_ms = sync_tests.get(name), async_tests.get(name)
        cells = [
            f"{ms * 1000:7.1f}" if ms is not None else f"{'-':>7}" for ms in (sync_ms, async_ms)
        ]
        ratio = f"{async_ms / sync_ms:5.2f}x" if sync_ms and async_ms else f"{'-':>6}"
        lines.append(f"  {name:54} {cells[0]} {cells[1]} {ratio}")

    sync_suite, async_suite = results[SYNC_SUITE.label], results[ASYNC_SUITE.label]
    lines += [
        "",
        "Suites: they hold different tests, so per-test cost, not a ratio of their totals:",
        f"  sync suite  {sync_suite.tests:4d} tests  {sync_suite.ms_per_test():7.1f} ms/test",
        f"  async suite {async_suite.tests:4d} tests  {async_suite.ms_per_test():7.1f} ms/test",
    ]
    return lines


def _as_json(results: dict[str, Runs], repeat: int, server: str) -> dict[str, object]:
    return {
        "kind": "styles",
        "repeat": repeat,
        "server": server,
        "runs": {
            label: {
                "tests": runs.tests,
                "wall_s": [round(s, 4) for s in runs.wall_s],
                "tests_s": [round(s, 4) for s in runs.tests_s],
            }
            for label, runs in results.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, metavar="K", help="rounds (default 3)")
    parser.add_argument(
        "--url", default=None, help="PostgreSQL server for the test databases (default: embedded)"
    )
    parser.add_argument(
        "--workers", type=int, default=0, metavar="N", help="run pytest with -n N (default: no)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    server = (urlsplit(args.url).hostname or args.url) if args.url else "embedded"
    results = _measure(args.repeat, args.url, args.workers)
    print("\n".join(_report(results, args.repeat, server, args.workers)))
    if args.json:
        _support.write_report(args.json, _as_json(results, args.repeat, server))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
