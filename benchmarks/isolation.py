"""Per-test cost of pgharness's isolation strategies, side by side, in one run.

Generates a suite (``--tests`` async tests, each committing ``--rows`` rows through a service
that opens its own ``SessionLocal()`` session, then counting them) and runs it under:

    none             no isolation: the floor (rows pile up; nothing is cleaned)
    transaction      pgharness default: outer transaction + savepoints, rolled back
    truncate         TRUNCATE after each test
    create_database  CREATE DATABASE .. TEMPLATE per test, dropped after
    database         pgharness pg_isolation("database"): a clone from the warm pool
    baseline         the same, with the pgharness sources in ``--baseline DIR`` (to compare
                     a change side by side, e.g. DIR from
                     ``git archive HEAD packages/pgharness/src | tar -x -C /tmp/base``)

Time is measured from the first test's start to the last test's end (collection, server
start and template build excluded), ``--repeat`` times in interleaved order; the table shows
medians in ms per test and the ratio to the floor.

The floor is a real suite, not an empty one: on the default per-test event loop an app
engine cannot be shared between tests (asyncpg connections belong to one loop), so the floor
disposes the app's engine after each test, i.e. it also connects once per test. With
``--loop-scope session`` all tests share one loop and the floor keeps its pooled connection.

    .venv/bin/python benchmarks/isolation.py [--tests 200] [--rows 10] [--repeat 3]
        [--url postgresql://postgres@127.0.0.1:5432/postgres | --url embedded]
        [--loop-scope function] [--baseline /tmp/base/packages/pgharness/src]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

STRATEGIES = ("none", "transaction", "truncate", "create_database", "database", "baseline")
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_RUNS = itertools.count(1)

APP = """
import os

from sqlalchemy import String, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    test: Mapped[int]
    name: Mapped[str] = mapped_column(String(100))


# Rows of earlier runs stay in the floor's database: each run counts only its own.
RUN = int(os.environ.get("BENCH_RUN", "0"))
engine = create_async_engine(os.environ.get("BENCH_APP_URL", "postgresql+asyncpg://app@db.invalid/x"))
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


async def add_items(test: int, rows: int) -> None:
    async with SessionLocal() as session:
        session.add_all(Item(test=test, name=f"item {n}") for n in range(rows))
        await session.commit()


async def count_items(test: int) -> int:
    async with SessionLocal() as session:
        return int(await session.scalar(select(func.count(Item.id)).where(Item.test == test)) or 0)
"""

TEST = """
async def test_{i}():
    await benchapp.add_items(benchapp.RUN + {i}, {rows})
    assert await benchapp.count_items(benchapp.RUN + {i}) == {rows}
"""

TIMER = """
import json
import os
import time

_times = {}


def pytest_runtest_logstart(nodeid, location):
    _times.setdefault("first", time.perf_counter())


def pytest_runtest_logfinish(nodeid, location):
    _times["last"] = time.perf_counter()
    _times["count"] = _times.get("count", 0) + 1


def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["BENCH_OUT"], "w") as out:
        json.dump({**_times, "exitstatus": int(exitstatus)}, out)
"""

CONFTEST_ENGINE_PER_TEST = """
import pytest
import benchapp


@pytest.fixture(autouse=True)
async def _app_engine_per_loop():
    yield
    await benchapp.engine.dispose()  # the next test runs on another loop
"""

CONFTEST_TRUNCATE = """
import pytest
from sqlalchemy import text
import benchapp


@pytest.fixture(autouse=True)
async def _truncate():
    yield
    async with benchapp.engine.begin() as conn:
        await conn.execute(text("TRUNCATE items"))
    {dispose}
"""

CONFTEST_CREATE_DATABASE = """
import itertools
import os

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
import benchapp

_counter = itertools.count()
_admin = create_engine(os.environ["BENCH_ADMIN_URL"], isolation_level="AUTOCOMMIT").connect()


@pytest.fixture(autouse=True)
def _database():
    name = f"{{os.environ['BENCH_PREFIX']}}t{{next(_counter)}}"
    template = os.environ["BENCH_TEMPLATE"]
    _admin.exec_driver_sql(f'CREATE DATABASE "{{name}}" TEMPLATE "{{template}}"')
    engine = create_async_engine(os.environ["BENCH_URL_FOR"].replace("DBNAME", name))
    benchapp.SessionLocal.configure(bind=engine)
    yield engine
    _admin.exec_driver_sql(f'DROP DATABASE "{{name}}"')


@pytest.fixture(autouse=True)
async def _dispose(_database):
    yield
    await _database.dispose()
"""


def _server(url: str) -> Any:
    """pgharness's own server objects: an external URL, or ``embedded`` for a throwaway one."""
    from pgharness._config import parse_server_url
    from pgharness._names import RunIdentity
    from pgharness._server import EmbeddedServer, ExternalServer

    if url == "embedded":
        # A run id like pytest's own, so a benchmark killed midway is cleaned up by the next
        # run (of pgharness or of this script) like any dead run.
        return EmbeddedServer(RunIdentity.for_process(None).run_id)
    return ExternalServer(parse_server_url(url, "--url"), "--url")


def _write_suite(root: Path, tests: int, rows: int, loop_scope: str) -> None:
    (root / "benchapp.py").write_text(APP)
    (root / "benchtimer.py").write_text(TIMER)
    body = "import pytest\nimport benchapp\n" + "".join(
        TEST.format(i=i, rows=rows) for i in range(tests)
    )
    (root / "test_bench.py").write_text(body)


def _prepare(root: Path, strategy: str, args: argparse.Namespace, pg_url: str) -> list[str]:
    """Write this strategy's conftest/ini; return extra pytest arguments."""
    work = root / strategy
    work.mkdir(exist_ok=True)
    for name in ("benchapp.py", "benchtimer.py"):
        (work / name).write_text((root / name).read_text())
    body = (root / "test_bench.py").read_text()
    ini = [
        "[pytest]",
        "asyncio_mode = auto",
        "asyncio_default_fixture_loop_scope = " + args.loop_scope,
        "asyncio_default_test_loop_scope = " + args.loop_scope,
        "pythonpath = .",
    ]
    conftest = ""
    extra: list[str] = []
    per_test_dispose = args.loop_scope == "function"
    if strategy in ("transaction", "database", "baseline"):
        mode = "transaction" if strategy == "transaction" else "database"
        body = body.replace(
            "import benchapp\n",
            f'import benchapp\n\npytestmark = pytest.mark.pg_isolation("{mode}")\n',
            1,
        )
        ini += [
            f"pgharness_url = {pg_url}",
            "pgharness_schema = benchapp:Base",
            "pgharness_sessionmakers = benchapp:SessionLocal",
        ]
    else:
        extra = ["-p", "no:pgharness"]
        if strategy == "none":
            conftest = CONFTEST_ENGINE_PER_TEST if per_test_dispose else ""
        elif strategy == "truncate":
            dispose = "await benchapp.engine.dispose()" if per_test_dispose else ""
            conftest = CONFTEST_TRUNCATE.format(dispose=dispose)
        elif strategy == "create_database":
            conftest = CONFTEST_CREATE_DATABASE.format()
    (work / "test_bench.py").write_text(body)
    (work / "conftest.py").write_text(textwrap.dedent(conftest))
    (work / "pytest.ini").write_text("\n".join(ini) + "\n")
    return extra


def _run(
    root: Path, strategy: str, extra: list[str], env: dict[str, str], baseline: str | None
) -> float:
    out = root / f"{strategy}.json"
    env = {**env, "BENCH_OUT": str(out), "BENCH_RUN": str(next(_RUNS) * 100_000)}
    if strategy == "baseline" and baseline:
        # Found before the installed (editable) pgharness, plugin entry point included.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [baseline, env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "benchtimer",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        *extra,
    ]
    done = subprocess.run(
        command, cwd=root / strategy, env=env, capture_output=True, text=True, timeout=1800
    )
    result = json.loads(out.read_text()) if out.exists() else {}
    if done.returncode != 0 or not result:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"{strategy}: pytest failed ({done.returncode})")
    return (result["last"] - result["first"]) / result["count"] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", default=os.environ.get("PGHARNESS_URL", DEFAULT_URL))
    parser.add_argument(
        "--loop-scope", default="function", choices=("function", "module", "session")
    )
    parser.add_argument("--only", nargs="*", choices=STRATEGIES, default=None)
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        default=None,
        help="a folder holding another pgharness package: adds the 'baseline' strategy",
    )
    args = parser.parse_args()
    if args.only is None:
        args.only = [s for s in STRATEGIES if s != "baseline" or args.baseline]
    if "baseline" in args.only and not (
        args.baseline and (Path(args.baseline) / "pgharness" / "plugin.py").is_file()
    ):
        parser.error("the baseline strategy needs --baseline DIR with DIR/pgharness/plugin.py")

    from sqlalchemy import create_engine

    prefix = f"pgh2bench_{os.getpid()}_"
    names = {"template": prefix + "tpl", "floor": prefix + "floor"}
    server = _server(args.url)
    address = server.address
    admin = address.connect()
    created: list[str] = []
    try:
        for name in names.values():
            admin.execute(f'CREATE DATABASE "{name}"')
            created.append(name)
        with tempfile.TemporaryDirectory(prefix="pgh2bench-") as tmp:
            root = Path(tmp)
            _write_suite(root, args.tests, args.rows, args.loop_scope)
            sys.path.insert(0, str(root))
            import benchapp  # type: ignore[import-not-found]

            schema_engine = create_engine(address.url("postgresql+psycopg", names["template"]))
            benchapp.Base.metadata.create_all(schema_engine)
            schema_engine.dispose()
            admin.execute(f'DROP DATABASE "{names["floor"]}"')
            admin.execute(f'CREATE DATABASE "{names["floor"]}" TEMPLATE "{names["template"]}"')
            env = {
                **os.environ,
                "BENCH_APP_URL": address.url("postgresql+asyncpg", names["floor"]),
                "BENCH_ADMIN_URL": address.url("postgresql+psycopg", address.maintenance_db),
                "BENCH_PREFIX": prefix,
                "BENCH_TEMPLATE": names["template"],
                "BENCH_URL_FOR": address.url("postgresql+asyncpg", "DBNAME"),
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            env.pop("PGHARNESS_URL", None)
            pg_url = address.url("postgresql", address.maintenance_db)
            extras = {s: _prepare(root, s, args, pg_url) for s in args.only}
            timings: dict[str, list[float]] = {s: [] for s in args.only}
            began = time.perf_counter()
            for _ in range(args.repeat):
                for strategy in args.only:
                    timings[strategy].append(
                        _run(root, strategy, extras[strategy], env, args.baseline)
                    )
            elapsed = time.perf_counter() - began
    finally:
        for name in reversed(created):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        server.close()

    floor = statistics.median(timings["none"]) if "none" in timings else None
    print(
        f"\n{args.tests} tests x {args.rows} rows, loop scope {args.loop_scope}, "
        f"{args.repeat} runs each ({elapsed:.0f} s), {server.description}"
    )
    print(f"{'strategy':<17}{'ms/test (median)':>18}{'runs':>26}{'x floor':>10}")
    for strategy, values in timings.items():
        median = statistics.median(values)
        runs = " ".join(f"{v:.1f}" for v in values)
        ratio = f"{median / floor:.2f}x" if floor else "-"
        print(f"{strategy:<17}{median:>18.1f}{runs:>26}{ratio:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
