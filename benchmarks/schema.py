"""Per-test cost against schema size: pgharness's template clone next to create_all per test.

Generates, for each T in ``--tables``, a models module of T tables (a few columns of mixed
types, an index, a foreign key to the previous table) and a suite of ``--tests`` async tests,
each committing 10 rows into one table through an ``async_sessionmaker`` and counting them,
then runs it under:

    transaction      pgharness default: outer transaction + savepoints, rolled back
    template clone   pgharness pg_isolation("database"): a CREATE DATABASE .. TEMPLATE clone
                     of the schema's template, from the warm pool
    create_all       no pgharness: per test a fresh empty database (from template0),
                     ``Base.metadata.create_all`` on it, dropped after the test

Time is measured from the first test's start to the last test's end (collection, server
start and template build excluded), ``--repeat`` times in interleaved order; the table shows
medians in ms per test and the ratio to ``transaction`` at the same T.

The one-off cost of the schema is measured apart, once per T and run: ``metadata.create_all``
on an empty database through psycopg, the way pgharness builds its template (without the
CREATE DATABASE around it). pgharness pays it once per schema version, not per run: later
runs reuse the template.

    .venv/bin/python benchmarks/schema.py [--tables 10 100 400] [--tests 50] [--repeat 3]
        [--url postgresql://postgres@127.0.0.1:5432/postgres | --url embedded]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import _support

STRATEGIES = ("transaction", "template clone", "create_all")
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ROWS = 10
SCHEMA_SETTING = "models:Base"

MODELS_HEAD = """
import os
from datetime import datetime
from decimal import Decimal

from sqlalchemy import DateTime, ForeignKey, Numeric, String, Text, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column


class Base(DeclarativeBase):
    pass
"""

MODEL = """

class Table{i}(Base):
    __tablename__ = "table_{i}"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    active: Mapped[bool] = mapped_column(default=True)
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
"""

PARENT = """    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("table_{parent}.id"), index=True
    )
"""

MODELS_TAIL = """

TABLES = [{tables}]

engine = create_async_engine(os.environ.get("BENCH_APP_URL", "postgresql+asyncpg://app@db.invalid/x"))
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)

# Mapping T classes is a one-off cost: paid at import (collection), not by the first test.
configure_mappers()


async def add_rows(table: int, rows: int) -> None:
    model = TABLES[table]
    async with SessionLocal() as session:
        session.add_all(model(name=f"row {{n}}", amount=Decimal(n)) for n in range(rows))
        await session.commit()


async def count_rows(table: int) -> int:
    model = TABLES[table]
    async with SessionLocal() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)
"""

TEST = """
async def test_{i}():
    await models.add_rows({table}, {rows})
    assert await models.count_rows({table}) == {rows}
"""

CONFTEST_CREATE_ALL = """
import itertools
import os

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

import models

_counter = itertools.count()
_admin = create_engine(os.environ["BENCH_ADMIN_URL"], isolation_level="AUTOCOMMIT").connect()


@pytest.fixture(autouse=True)
async def _database():
    name = f"{os.environ['BENCH_PREFIX']}t{next(_counter)}"
    _admin.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
    engine = create_async_engine(os.environ["BENCH_URL_FOR"].replace("DBNAME", name))
    async with engine.begin() as conn:
        await conn.run_sync(models.Base.metadata.create_all)
    models.SessionLocal.configure(bind=engine)
    yield
    await engine.dispose()
    _admin.exec_driver_sql(f'DROP DATABASE "{name}"')
"""

INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
pythonpath = .
"""


def _models_source(tables: int) -> str:
    parts = [MODELS_HEAD]
    for i in range(tables):
        parts.append(MODEL.format(i=i))
        if i > 0:
            parts.append(PARENT.format(parent=i - 1))
    names = ", ".join(f"Table{i}" for i in range(tables))
    parts.append(MODELS_TAIL.format(tables=names))
    return "".join(parts)


def _tests_source(tests: int, tables: int, mark: str | None) -> str:
    head = "import pytest\n\nimport models\n"
    if mark:
        head += f'\npytestmark = pytest.mark.pg_isolation("{mark}")\n'
    # Spread over the whole schema: test i writes to a table proportionally far down it.
    return head + "".join(
        TEST.format(i=i, table=i * tables // tests, rows=ROWS) for i in range(tests)
    )


def _write_suites(root: Path, tables: int, tests: int, pg_url: str) -> Path:
    """Two projects for T tables: ``pgharness`` (both its strategies) and ``create_all``.

    Both pgharness strategies live in one project so that they clone the same template.
    """
    base = root / f"t{tables}"
    models = _models_source(tables)
    for project in ("pgharness", "create_all"):
        work = base / project
        work.mkdir(parents=True)
        (work / "models.py").write_text(models)
        _support.write_timer(work)
    harness = base / "pgharness"
    (harness / "test_transaction.py").write_text(_tests_source(tests, tables, "transaction"))
    (harness / "test_clone.py").write_text(_tests_source(tests, tables, "database"))
    (harness / "pytest.ini").write_text(
        INI
        + f"pgharness_url = {pg_url}\n"
        + f"pgharness_schema = {SCHEMA_SETTING}\n"
        + "pgharness_sessionmakers = models:SessionLocal\n"
    )
    plain = base / "create_all"
    (plain / "test_create_all.py").write_text(_tests_source(tests, tables, None))
    (plain / "conftest.py").write_text(CONFTEST_CREATE_ALL)
    (plain / "pytest.ini").write_text(INI)
    return base


# Where each strategy runs (project folder) and what pytest is given.
RUNS: dict[str, tuple[str, list[str]]] = {
    "transaction": ("pgharness", ["test_transaction.py"]),
    "template clone": ("pgharness", ["test_clone.py"]),
    "create_all": ("create_all", ["-p", "no:pgharness", "test_create_all.py"]),
}


def _run(base: Path, strategy: str, env: dict[str, str]) -> float:
    """One pytest run; ms per test from the first test's start to the last one's end."""
    project, extra = RUNS[strategy]
    out = base / f"{project}-{strategy.replace(' ', '_')}.json"
    done = _support.run_timed(extra, base / project, env, out)
    if not done.passed:
        done.fail(f"{base.name} {strategy}: pytest failed ({done.returncode})")
    return done.ms_per_test


def _load_models(base: Path) -> ModuleType:
    # One models module per T in this process: each under its own name.
    path = base / "create_all" / "models.py"
    spec = importlib.util.spec_from_file_location(f"bench_models_{base.name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _create_all_once_ms(models: ModuleType, address: Any, admin: Any, name: str) -> float:
    """``create_all`` into an empty database, as pgharness builds a template (psycopg)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        engine = create_engine(address.url("postgresql+psycopg", name), poolclass=NullPool)
        try:
            began = time.perf_counter()
            models.Base.metadata.create_all(engine)
            return (time.perf_counter() - began) * 1000
        finally:
            engine.dispose()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _print_table(args: argparse.Namespace, timings: dict[str, dict[str, list[float]]]) -> None:
    header = f"{'tables':>6}  {'strategy':<16}{'ms/test (median)':>18}  {'runs':<24}"
    print(header + f"{'x transaction':>14}")
    for tables in args.tables:
        key = str(tables)
        floor = statistics.median(timings["transaction"][key])
        for strategy in STRATEGIES:
            values = timings[strategy][key]
            median = statistics.median(values)
            runs = _support.format_runs(values)
            print(f"{tables:>6}  {strategy:<16}{median:>18.1f}  {runs:<24}{median / floor:>13.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tables", type=int, nargs="+", default=[10, 100, 400])
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", default=os.environ.get("PGHARNESS_URL", DEFAULT_URL))
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the timings")
    args = parser.parse_args()
    if min(args.tables) < 1 or args.tests < 1 or args.repeat < 1:
        parser.error("--tables, --tests and --repeat must be at least 1")

    from pgharness._names import project_lineage

    prefix = f"pghschema_{os.getpid()}_"
    server = _support.server(args.url)
    address = server.address
    admin = address.connect()
    timings: dict[str, dict[str, list[float]]] = {
        s: {str(t): [] for t in args.tables} for s in STRATEGIES
    }
    once: dict[str, list[float]] = {str(t): [] for t in args.tables}
    lineages: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="pghschema-") as tmp:
            root = Path(tmp)
            pg_url = address.url("postgresql", address.maintenance_db)
            bases = {t: _write_suites(root, t, args.tests, pg_url) for t in args.tables}
            lineages = [project_lineage(SCHEMA_SETTING)]
            models = {t: _load_models(base) for t, base in bases.items()}
            env = {
                **os.environ,
                "BENCH_ADMIN_URL": address.url("postgresql+psycopg", address.maintenance_db),
                "BENCH_PREFIX": prefix,
                "BENCH_URL_FOR": address.url("postgresql+asyncpg", "DBNAME"),
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            env.pop("PGHARNESS_URL", None)
            began = time.perf_counter()
            for round_ in range(args.repeat):
                for tables, base in bases.items():
                    once[str(tables)].append(
                        _create_all_once_ms(models[tables], address, admin, prefix + "once")
                    )
                    for strategy in _support.rotated(STRATEGIES, round_):
                        _support.settle(admin)
                        timings[strategy][str(tables)].append(_run(base, strategy, env))
            elapsed = time.perf_counter() - began
    finally:
        if not server.disposable:
            _support.drop_project_templates(admin, lineages)
        admin.close()
        server.close()

    print(
        f"\n{args.tests} tests x {ROWS} rows, {args.repeat} runs each ({elapsed:.0f} s), "
        f"{server.description}"
    )
    _print_table(args, timings)
    print("\none-off schema build: metadata.create_all on an empty database (psycopg), ms")
    print(f"{'tables':>6}  {'median':>10}  runs")
    for tables, values in once.items():
        print(f"{tables:>6}  {statistics.median(values):>10.1f}  {_support.format_runs(values)}")

    if args.json:
        report = {
            "kind": "schema",
            **_support.options_of(args, "tests", "repeat"),
            "server": server.description,
            "timings": timings,
            "create_all_once_ms": once,
        }
        _support.write_report(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
