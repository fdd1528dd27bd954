"""Per-test cost of isolation strategies, side by side, in one run.

Generates a suite (``--tests`` async tests, each committing ``--rows`` rows through a service
that opens its own ``SessionLocal()`` session, then counting them) and runs it under:

    none             no isolation: the floor (rows pile up; nothing is cleaned)
    transaction      pgharness default: outer transaction + savepoints, rolled back
    database         pgharness pg_isolation("database"): a clone from the warm pool
    truncate         TRUNCATE after each test
    create_database  CREATE DATABASE .. TEMPLATE per test, dropped after
    guide            the troubleshooting guide's sync tests: plain ``def`` tests share one sync
                     ``Session`` with a sync twin of the service, and the fixture deletes every
                     row after each test (the app commits, so a rollback undoes nothing)
    pytest_sqla      pytest-sqla 0.0.2 as its README sets it up: the tests hand its
                     ``sqla_async_sessionmaker`` to the service (installed with pip into
                     ``--pytest-sqla DIR``, never into the virtualenv, and put on PYTHONPATH
                     for its own runs only)
    handwritten      the conftest a user writes for the loop setting: an outer transaction
                     per test on a connection of its own, the app's sessionmaker joined with
                     ``join_transaction_mode="create_savepoint"``; a pooled engine as wide as
                     the loop (session loop: one for the session), or on per-test loops, where
                     no pool can outlive a test, a ``NullPool`` engine
    baseline         pgharness with the sources in ``--baseline DIR``, in
                     ``--baseline-isolation`` (default ``database``) mode (to compare a change
                     side by side, e.g. DIR from
                     ``git archive HEAD packages/pgharness/src | tar -x -C /tmp/base``)

Every test asserts its own rows' count. Where a strategy claims isolation, the same query
also counts every row the test can see, which must be its own rows only; the floor checks its
own rows alone (its rows pile up by design). Under ``--workers`` > 1 (pytest-xdist), truncate
and guide give each worker a database of its own (on a shared one the workers would delete
each other's rows); pytest-sqla's workers share one database, as its README describes.

Time is measured from the first test's start to the last test's end (collection, server
start and template build excluded), ``--repeat`` times in interleaved order; the table shows
medians in ms per test and the ratio to the floor. With several workers that is the suite's
elapsed time divided by the test count, so a speed-up is ms(1 worker) / ms(n workers).
pytest-sqla creates its table at its first test and drops it after its last one, so that DDL
falls inside its measured time.

The floor is a real suite, not an empty one: on the default per-test event loop an app
engine cannot be shared between tests (asyncpg connections belong to one loop), so the floor
disposes the app's engine after each test, i.e. it also connects once per test. With
``--loop-scope session`` all tests share one loop and the floor is the app's one pooled engine,
shared by the whole session: one connection, kept.

    .venv/bin/python benchmarks/isolation.py [--tests 200] [--rows 10] [--repeat 3]
        [--workers 1] [--json results.json]
        [--url postgresql://postgres@127.0.0.1:5432/postgres | --url embedded]
        [--loop-scope function] [--only none transaction ...]
        [--baseline /tmp/base/packages/pgharness/src] [--baseline-isolation transaction]
        [--pytest-sqla .bench/pytest-sqla]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _support

STRATEGIES = (
    "none",
    "transaction",
    "database",
    "truncate",
    "create_database",
    "guide",
    "pytest_sqla",
    "handwritten",
    "baseline",
)
PGHARNESS_STRATEGIES = ("transaction", "database", "baseline")
# These clean one database by hand, so each xdist worker needs a database of its own.
PER_WORKER_DATABASE = ("truncate", "guide")
# These roll back: xdist workers share their one database (the floor's keeps piling up rows).
SHARED_DATABASE = ("handwritten",)
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parent.parent
PYTEST_SQLA = "pytest-sqla==0.0.2"
SCHEMA = "benchapp:Base"
_RUNS = itertools.count(1)

APP = """
import os

from sqlalchemy import Select, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


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


def _counts(test: int) -> Select[tuple[int, int]]:
    # One query for both numbers, so checking isolation costs nothing extra: the test's own
    # rows, and every row it can see (the same number when the test is isolated).
    return select(func.count(Item.id).filter(Item.test == test), func.count(Item.id))


async def add_items(
    test: int, rows: int, sessionmaker: async_sessionmaker[AsyncSession] = SessionLocal
) -> None:
    async with sessionmaker() as session:
        session.add_all(Item(test=test, name=f"item {n}") for n in range(rows))
        await session.commit()


async def count_items(
    test: int, sessionmaker: async_sessionmaker[AsyncSession] = SessionLocal
) -> tuple[int, int]:
    async with sessionmaker() as session:
        own, visible = (await session.execute(_counts(test))).one()
        return int(own), int(visible)


# The service's sync twin, for tests in the troubleshooting guide's style.
def add_items_sync(session: Session, test: int, rows: int) -> None:
    session.add_all(Item(test=test, name=f"item {n}") for n in range(rows))
    session.commit()


def count_items_sync(session: Session, test: int) -> tuple[int, int]:
    own, visible = session.execute(_counts(test)).one()
    return int(own), int(visible)
"""

TEST_ASYNC = """
async def test_{i}({fixture}):
    await benchapp.add_items(benchapp.RUN + {i}, {rows}{maker})
    assert {counts} == {expected}
"""

TEST_GUIDE = """
def test_{i}(session):
    benchapp.add_items_sync(session, benchapp.RUN + {i}, {rows})
    assert benchapp.count_items_sync(session, benchapp.RUN + {i}) == ({rows}, {rows})
"""

# Before benchapp is imported, so the app's engine is made for the worker's own database.
WORKER_DATABASE = """
import os

from sqlalchemy import make_url

# On one shared database the xdist workers would delete each other's rows mid-test.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
for _name in ("BENCH_APP_URL", "BENCH_SYNC_URL") if _worker else ():
    _url = make_url(os.environ[_name])
    _url = _url.set(database=f"{_url.database}_{_worker}")
    os.environ[_name] = _url.render_as_string(hide_password=False)
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
"""

DISPOSE_AFTER_TRUNCATE = """\
    await benchapp.engine.dispose()  # the next test runs on another loop
"""

CONFTEST_CREATE_DATABASE = """
import itertools
import os

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
import benchapp

_counter = itertools.count()
# xdist workers count separately: the worker id keeps their database names apart.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
_admin = create_engine(os.environ["BENCH_ADMIN_URL"], isolation_level="AUTOCOMMIT").connect()


@pytest.fixture(autouse=True)
def _database():
    name = f"{os.environ['BENCH_PREFIX']}t_{_worker}_{next(_counter)}"
    template = os.environ["BENCH_TEMPLATE"]
    _admin.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    engine = create_async_engine(os.environ["BENCH_URL_FOR"].replace("DBNAME", name))
    benchapp.SessionLocal.configure(bind=engine)
    yield engine
    _admin.exec_driver_sql(f'DROP DATABASE "{name}"')


@pytest.fixture(autouse=True)
async def _dispose(_database):
    yield
    await _database.dispose()
"""

# The troubleshooting guide's conftest, with this suite's one table.
CONFTEST_GUIDE = """
import pytest
from sqlalchemy import create_engine, delete
from sqlalchemy.orm import Session

import benchapp

sync_engine = create_engine(os.environ["BENCH_SYNC_URL"])  # postgresql+psycopg://...


@pytest.fixture
def session():
    with Session(sync_engine) as session:
        yield session
        session.rollback()
        session.execute(delete(benchapp.Item))  # what the app committed is really there
        session.commit()
"""

# The conftest a user writes when the loop outlives a test: one pooled engine for as long as the
# loop, and per test a connection, its outer transaction, and the app's sessionmaker joined to it.
CONFTEST_HANDWRITTEN_POOLED = """
import os

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

import benchapp


@pytest.fixture(scope="LOOP_SCOPE")
async def engine():
    engine = create_async_engine(os.environ["BENCH_APP_URL"])
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
async def connection(engine):
    async with engine.connect() as connection:
        transaction = await connection.begin()
        benchapp.SessionLocal.configure(bind=connection, join_transaction_mode="create_savepoint")
        yield connection
        await transaction.rollback()
"""

# The same on per-test loops, where a pooled connection would outlive its loop: NullPool.
CONFTEST_HANDWRITTEN_PER_TEST = """
import os

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import benchapp

engine = create_async_engine(os.environ["BENCH_APP_URL"], poolclass=NullPool)


@pytest.fixture(autouse=True)
async def connection():
    async with engine.connect() as connection:
        transaction = await connection.begin()
        benchapp.SessionLocal.configure(bind=connection, join_transaction_mode="create_savepoint")
        yield connection
        await transaction.rollback()
"""

# pytest-sqla's README: test sessions behave like the app's own sessionmaker.
CONFTEST_PYTEST_SQLA = """
import os
from pathlib import Path

import pytest
import pytest_sqla


def pytest_configure(config):
    # What these runs measure: pytest-sqla's plugin, from its own folder, at its version.
    plugin = config.pluginmanager.get_plugin("sqla")
    folder = Path(os.environ["BENCH_PYTEST_SQLA"]).resolve()
    if plugin is None or folder not in Path(plugin.__file__).resolve().parents:
        raise pytest.UsageError(f"pytest-sqla's plugin is not loaded from {folder}")
    if pytest_sqla.__version__ != os.environ["BENCH_PYTEST_SQLA_VERSION"]:
        raise pytest.UsageError(f"pytest-sqla is {pytest_sqla.__version__}")


@pytest.fixture(scope="session")
def sqla_session_options():
    return {"expire_on_commit": False}  # as the app's own sessionmaker
"""


@dataclass
class Run:
    """One pytest run of one strategy."""

    ms_per_test: float
    wall_s: float


def _ensure_pytest_sqla(target: Path) -> None:
    """Install pytest-sqla into its own folder: in the virtualenv it would join every run."""
    if (target / "pytest_sqla" / "__init__.py").is_file():
        return
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run([*command, "--target", str(target), PYTEST_SQLA], check=True)


def _test_module(strategy: str, tests: int, rows: int, baseline_isolation: str = "database") -> str:
    """The suite's tests as this strategy writes them."""
    header = "import pytest\nimport benchapp\n"
    if strategy in PGHARNESS_STRATEGIES:
        mode = "transaction" if strategy == "transaction" else "database"
        if strategy == "baseline":
            mode = baseline_isolation
        header += f'\npytestmark = pytest.mark.pg_isolation("{mode}")\n'
    if strategy == "guide":
        return header + "".join(TEST_GUIDE.format(i=i, rows=rows) for i in range(tests))
    fixture = maker = ""
    if strategy == "pytest_sqla":
        fixture, maker = "sqla_async_sessionmaker", ", sqla_async_sessionmaker"
    counts = f"await benchapp.count_items(benchapp.RUN + {{i}}{maker})"
    expected = f"({rows}, {rows})"
    if strategy == "none":
        # The floor isolates nothing: it can only check its own rows.
        counts, expected = f"({counts})[0]", str(rows)
    test = TEST_ASYNC.replace("{counts}", counts).replace("{expected}", expected)
    return header + "".join(
        test.format(i=i, rows=rows, fixture=fixture, maker=maker) for i in range(tests)
    )


def _conftest(strategy: str, loop_scope: str) -> str:
    per_test_dispose = loop_scope == "function"
    if strategy == "none":
        return CONFTEST_ENGINE_PER_TEST if per_test_dispose else ""
    if strategy == "truncate":
        dispose = DISPOSE_AFTER_TRUNCATE if per_test_dispose else ""
        return WORKER_DATABASE + CONFTEST_TRUNCATE + dispose
    if strategy == "create_database":
        return CONFTEST_CREATE_DATABASE
    if strategy == "guide":
        return WORKER_DATABASE + CONFTEST_GUIDE
    if strategy == "pytest_sqla":
        return CONFTEST_PYTEST_SQLA
    if strategy == "handwritten":
        if per_test_dispose:
            return CONFTEST_HANDWRITTEN_PER_TEST
        return CONFTEST_HANDWRITTEN_POOLED.replace("LOOP_SCOPE", loop_scope)
    return ""


def _prepare(
    root: Path, strategy: str, args: argparse.Namespace, urls: dict[str, str]
) -> list[str]:
    """Write this strategy's suite, conftest and ini; return extra pytest arguments."""
    work = root / strategy
    work.mkdir(exist_ok=True)
    (work / "benchapp.py").write_text(APP)
    _support.write_timer(work)
    module = _test_module(strategy, args.tests, args.rows, args.baseline_isolation)
    (work / "test_bench.py").write_text(module)
    (work / "conftest.py").write_text(textwrap.dedent(_conftest(strategy, args.loop_scope)))
    ini = [
        "[pytest]",
        "asyncio_mode = auto",
        "asyncio_default_fixture_loop_scope = " + args.loop_scope,
        "asyncio_default_test_loop_scope = " + args.loop_scope,
        "pythonpath = .",
    ]
    if strategy in PGHARNESS_STRATEGIES:
        ini += [
            f"pgharness_url = {urls['pgharness']}",
            f"pgharness_schema = {SCHEMA}",
            "pgharness_sessionmakers = benchapp:SessionLocal",
        ]
    if strategy == "pytest_sqla":
        ini += [
            f"sqla_url = {urls['sqla']}",
            f"sqla_async_url = {urls['sqla_async']}",
            "sqla_metadata = benchapp:Base",
        ]
    (work / "pytest.ini").write_text("\n".join(ini) + "\n")
    extra = ["-n", str(args.workers)] if args.workers > 1 else []
    if strategy not in PGHARNESS_STRATEGIES:
        extra += ["-p", "no:pgharness"]
    return extra


def _run(root: Path, strategy: str, extra: list[str], env: dict[str, str], tests: int) -> Run:
    env = {**env, "BENCH_RUN": str(next(_RUNS) * 100_000)}
    done = _support.run_timed(extra, root / strategy, env, root / f"{strategy}.json")
    if not done.passed:
        done.fail(f"{strategy}: pytest failed ({done.returncode})")
    if done.timing["count"] != tests:
        done.fail(f"{strategy}: {done.timing['count']} of {tests} tests ran")
    return Run(done.ms_per_test, done.wall_s)


def _strategy_env(
    strategy: str,
    env: dict[str, str],
    address: Any,
    names: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, str]:
    """Where this strategy's app and cleanup connect."""
    database = names.get(strategy, names["floor"])
    env = {
        **env,
        "BENCH_APP_URL": address.url("postgresql+asyncpg", database),
        "BENCH_SYNC_URL": address.url("postgresql+psycopg", database),
    }
    if strategy == "baseline":
        # Found before the installed (editable) pgharness, plugin entry point included.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.baseline, env.get("PYTHONPATH")]))
    if strategy == "pytest_sqla":
        # Its dist-info there registers its pytest11 entry point for these runs only.
        env["BENCH_PYTEST_SQLA"] = args.pytest_sqla
        env["BENCH_PYTEST_SQLA_VERSION"] = PYTEST_SQLA.split("==")[1]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.pytest_sqla, env.get("PYTHONPATH")]))
    return env


def _databases(prefix: str, strategies: list[str], workers: int) -> dict[str, list[str]]:
    """The databases to create, by what they are made from: the template, or empty."""
    from_template = [prefix + "floor"]
    from_template += [prefix + s for s in SHARED_DATABASE if s in strategies]
    for strategy in strategies:
        if strategy in PER_WORKER_DATABASE:
            if workers > 1:
                from_template += [f"{prefix}{strategy}_gw{n}" for n in range(workers)]
            else:
                from_template.append(prefix + strategy)
    # pytest-sqla creates its tables itself and refuses tables it did not create.
    empty = [prefix + "pytest_sqla"] if "pytest_sqla" in strategies else []
    return {"template": from_template, "empty": empty}


def _template_lineages(strategies: list[str]) -> list[str]:
    """Whose templates the pgharness strategies build (one lineage: the schema setting)."""
    from pgharness._names import project_lineage

    return [project_lineage(SCHEMA)] if set(strategies) & set(PGHARNESS_STRATEGIES) else []


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=1, help="pytest-xdist workers (-n) for every strategy"
    )
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
    parser.add_argument(
        "--baseline-isolation",
        default="database",
        choices=("transaction", "database"),
        help="the pg_isolation mode of the baseline strategy's tests",
    )
    parser.add_argument(
        "--pytest-sqla",
        metavar="DIR",
        default=str(REPO / ".bench" / "pytest-sqla"),
        help=f"where {PYTEST_SQLA} is (installed there with pip if missing)",
    )
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results")
    args = parser.parse_args()
    if args.only is None:
        args.only = [s for s in STRATEGIES if s != "baseline" or args.baseline]
    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    if "baseline" in args.only and not (
        args.baseline and (Path(args.baseline) / "pgharness" / "plugin.py").is_file()
    ):
        parser.error("the baseline strategy needs --baseline DIR with DIR/pgharness/plugin.py")
    return args


def main() -> int:
    args = _parse_args()
    if "pytest_sqla" in args.only:
        _ensure_pytest_sqla(Path(args.pytest_sqla))

    from sqlalchemy import create_engine

    prefix = f"pgh2bench_{os.getpid()}_"
    template = prefix + "tpl"
    databases = _databases(prefix, args.only, args.workers)
    names = {"floor": prefix + "floor", "pytest_sqla": prefix + "pytest_sqla"}
    names.update({s: prefix + s for s in (*PER_WORKER_DATABASE, *SHARED_DATABASE)})
    server = _support.server(args.url)
    address = server.address
    admin = address.connect()
    created: list[str] = []
    lineages: list[str] = []
    try:
        for name in [template, *databases["empty"]]:
            admin.execute(f'CREATE DATABASE "{name}"')
            created.append(name)
        with tempfile.TemporaryDirectory(prefix="pgh2bench-") as tmp:
            root = Path(tmp)
            lineages = _template_lineages(args.only)
            (root / "benchapp.py").write_text(APP)
            sys.path.insert(0, str(root))
            import benchapp  # type: ignore[import-not-found]

            schema_engine = create_engine(address.url("postgresql+psycopg", template))
            benchapp.Base.metadata.create_all(schema_engine)
            schema_engine.dispose()
            for name in databases["template"]:
                admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                created.append(name)
            env = {
                **os.environ,
                "BENCH_ADMIN_URL": address.url("postgresql+psycopg", address.maintenance_db),
                "BENCH_PREFIX": prefix,
                "BENCH_TEMPLATE": template,
                "BENCH_URL_FOR": address.url("postgresql+asyncpg", "DBNAME"),
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            env.pop("PGHARNESS_URL", None)
            env.pop("PYTEST_SQLA_URL", None)
            env.pop("PYTEST_SQLA_ASYNC_URL", None)
            urls = {
                "pgharness": address.url("postgresql", address.maintenance_db),
                "sqla": address.url("postgresql+psycopg", names["pytest_sqla"]),
                "sqla_async": address.url("postgresql+asyncpg", names["pytest_sqla"]),
            }
            extras = {s: _prepare(root, s, args, urls) for s in args.only}
            envs = {s: _strategy_env(s, env, address, names, args) for s in args.only}
            runs: dict[str, list[Run]] = {s: [] for s in args.only}
            began = time.perf_counter()
            for round_ in range(args.repeat):
                for strategy in _support.rotated(args.only, round_):
                    _support.settle(admin)
                    runs[strategy].append(
                        _run(root, strategy, extras[strategy], envs[strategy], args.tests)
                    )
            elapsed = time.perf_counter() - began
    finally:
        for name in reversed(created):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not server.disposable:
            _support.drop_project_templates(admin, lineages)
        admin.close()
        server.close()

    timings = {s: [r.ms_per_test for r in values] for s, values in runs.items()}
    _print_table(args, timings, elapsed, server.description)
    if args.json:
        report = {
            "kind": "isolation",
            **_support.options_of(args, "tests", "rows", "repeat", "workers", "loop_scope"),
            "server": server.description,
            "elapsed_s": round(elapsed, 3),
            "timings": timings,
            "median_ms": {s: statistics.median(v) for s, v in timings.items()},
            "wall_s": {s: [round(r.wall_s, 3) for r in values] for s, values in runs.items()},
            "baseline": args.baseline,
            "baseline_isolation": args.baseline_isolation if args.baseline else None,
            "pytest_sqla": PYTEST_SQLA if "pytest_sqla" in args.only else None,
        }
        _support.write_report(args.json, report)
    return 0


def _print_table(
    args: argparse.Namespace, timings: dict[str, list[float]], elapsed: float, server: str
) -> None:
    floor = statistics.median(timings["none"]) if "none" in timings else None
    workers = f", {args.workers} workers" if args.workers > 1 else ""
    print(
        f"\n{args.tests} tests x {args.rows} rows, loop scope {args.loop_scope}{workers}, "
        f"{args.repeat} runs each ({elapsed:.0f} s), {server}"
    )
    print(f"{'strategy':<17}{'ms/test (median)':>18}{'x floor':>10}  runs")
    for strategy, values in timings.items():
        median = statistics.median(values)
        ratio = f"{median / floor:.2f}x" if floor else "-"
        print(f"{strategy:<17}{median:>18.1f}{ratio:>10}  {_support.format_runs(values)}")


if __name__ == "__main__":
    raise SystemExit(main())
