"""What the benchmark scripts share.

- ``TIMER``: a pytest plugin written into a generated project (or a folder on PYTHONPATH) and
  loaded with ``-p benchtimer``; it times the test phase of one run, which ``run_timed`` runs.
- ``server``: pgharness's own server objects, for a URL or ``embedded``.
- ``drop_project_templates``: removes the templates pgharness built for a script's temporary
  projects, which no later run could reuse.
- ``wait_until_ready``: waits until a started ``dashtam serve`` answers ``/health/ready``
  (also used by Dashtam's README test).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

TIMER_MODULE = "benchtimer"
TIMER_OUT = "BENCH_OUT"

# Writes {"first", "last", "count", "per_test_s", "exitstatus"} as JSON to $BENCH_OUT: the
# perf_counter() of the first test's start and of the last test's end, how many tests ended,
# and each test's duration (setup + call + teardown) by node id. "first"/"last" are absent
# when no test ran.
TIMER = """
import json
import os
import time

_times = {}
_started = {}
_per_test = {}


def pytest_runtest_logstart(nodeid, location):
    now = time.perf_counter()
    _times.setdefault("first", now)
    _started[nodeid] = now


def pytest_runtest_logfinish(nodeid, location):
    now = time.perf_counter()
    _times["last"] = now
    _times["count"] = _times.get("count", 0) + 1
    _per_test[nodeid] = now - _started.get(nodeid, now)


def pytest_sessionfinish(session, exitstatus):
    # Under xdist the controller sees every test start and end; a worker sees only its share.
    if hasattr(session.config, "workerinput"):
        return
    with open(os.environ["BENCH_OUT"], "w") as out:
        json.dump({**_times, "per_test_s": _per_test, "exitstatus": int(exitstatus)}, out)
"""


def write_timer(folder: Path) -> None:
    """Put the timer plugin into ``folder``, importable as ``benchtimer`` from there."""
    (folder / f"{TIMER_MODULE}.py").write_text(TIMER)


@dataclass(frozen=True)
class TimedRun:
    """One pytest run: its wall time and what the timer plugin wrote (``{}`` if nothing)."""

    command: list[str]
    returncode: int
    wall_s: float
    timing: dict[str, Any]
    output: str  # the ends of stdout and stderr, to show when the run failed

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and bool(self.timing)

    @property
    def tests_s(self) -> float:
        """The test phase: from the first test's start to the last test's end."""
        return float(self.timing.get("last", 0.0) - self.timing.get("first", 0.0))

    @property
    def ms_per_test(self) -> float:
        return self.tests_s / int(self.timing["count"]) * 1000

    @property
    def per_test_s(self) -> dict[str, float]:
        """Each test's setup, call and teardown, by node id."""
        return dict(self.timing["per_test_s"])

    def fail(self, message: str) -> NoReturn:
        # A failing run times different work than a passing one: stop rather than report it.
        sys.stderr.write(self.output)
        raise SystemExit(message)


def run_timed(args: Sequence[str], cwd: Path, env: dict[str, str], out: Path) -> TimedRun:
    """``python -m pytest -q ARGS`` in ``cwd`` with the timer plugin, in file order, uncached.

    The plugin must be importable there (``write_timer`` into ``cwd`` or onto PYTHONPATH).
    """
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", TIMER_MODULE]
    command += ["-p", "no:randomly", "-p", "no:cacheprovider", *args]
    began = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=cwd,
        env={**env, TIMER_OUT: str(out)},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    wall_s = time.perf_counter() - began
    timing = json.loads(out.read_text()) if out.exists() else {}
    output = done.stdout[-4000:] + done.stderr[-4000:]
    return TimedRun(command, done.returncode, wall_s, timing, output)


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """The ``--json`` file every script writes."""
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def options_of(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The command-line options a report repeats, in the order given."""
    return {name: getattr(args, name) for name in names}


def format_runs(values: Iterable[float]) -> str:
    return " ".join(f"{value:.1f}" for value in values)


def server(url: str, option: str = "--url") -> Any:
    """pgharness's own server objects: an external URL, or ``embedded`` for a throwaway one."""
    from pgharness._config import parse_server_url
    from pgharness._embedded import EmbeddedServer
    from pgharness._names import RunIdentity
    from pgharness._server import ExternalServer

    if url == "embedded":
        # A run id like pytest's own, so a benchmark killed midway is cleaned up by the next
        # run (of pgharness or of this script) like any dead run.
        return EmbeddedServer(RunIdentity.for_process(None).run_id)
    return ExternalServer(parse_server_url(url, option), option)


def drop_project_templates(admin: Any, lineages: Iterable[str]) -> list[str]:
    """Drop every template of ``lineages`` (pgharness ``project_lineage``) on ``admin``'s server.

    The scripts' projects live in temporary folders, gone after the run: no later run would
    reuse or replace their templates, so they would stay on an external server for good.
    """
    from pgharness._names import TEMPLATE_NAME, template_prefix

    prefixes = tuple(template_prefix(lineage) for lineage in lineages)
    if not prefixes:
        return []
    rows = admin.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'pgh\\_tpl\\_%'"
    ).fetchall()
    names = [str(name) for (name,) in rows]
    # Only what pgharness itself would call a template: the same guard its own cleanup has.
    doomed = [n for n in names if n.startswith(prefixes) and TEMPLATE_NAME.match(n)]
    for name in doomed:
        admin.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return doomed


def rotated(items: Sequence[str], round_: int) -> list[str]:
    """``items`` started at a different place each round: no contender always runs right
    after the same other one (a heavy run leaves the server busy for a moment)."""
    shift = round_ % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


def settle(admin: Any) -> None:
    """Let the server finish the previous run's work before the next run starts.

    A ``CHECKPOINT`` writes out what the previous contender dirtied, so that cost is not
    paid by whichever contender comes next. It needs a superuser; without one, nothing.
    """
    # A non-superuser simply cannot: the runs stand as they are.
    with contextlib.suppress(Exception):
        admin.execute("CHECKPOINT")


def wait_until_ready(base: str, server: subprocess.Popen[Any], seconds: float) -> None:
    """Return once ``dashtam serve`` at ``base`` answers ``/health/ready`` with 200 (listening,
    its database reachable and migrated); raise ``RuntimeError`` if it exits or ``seconds`` pass.
    """
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"dashtam serve at {base} exited early (exit {server.returncode})")
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"dashtam serve at {base} was not ready within {seconds:g} s")
