"""The databases layer: per-run clones, the warm pool, and what the harness may touch."""

from __future__ import annotations

import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import EXTERNAL_URL, database_names, postgres_running_in, process_running, run_dirs
from pgharness._config import resolve_settings
from pgharness._harness import Harness
from pgharness._names import RunIdentity, advisory_key

MODELS = """
from sqlalchemy import Integer
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class Item(Base):
    __tablename__ = "pool_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
"""


@pytest.fixture
def url(shared_server_url: str) -> str:
    """A server the runs below reach by URL, as on a developer's or CI's own server: the run's
    shared embedded server, where a clone or a drop costs milliseconds instead of a second of
    fsync (the machine's server covers URL mode in test_server and test_template)."""
    return shared_server_url


@pytest.fixture
def url_admin(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to ``url``'s server, for checking what runs left."""
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def url_harness(tmp_path: Path, url: str) -> Iterator[Harness]:
    (tmp_path / "pool_models.py").write_text(MODELS)
    sys.path.insert(0, str(tmp_path))
    settings = resolve_settings(
        option_url=url,
        ini_url=None,
        ini_schema="pool_models:Base",
        ini_sessionmakers=[],
        ini_app=None,
        rootpath=tmp_path,
    )
    harness = Harness(settings, RunIdentity.for_process(None))
    yield harness
    harness.close()
    sys.path.remove(str(tmp_path))
    sys.modules.pop("pool_models", None)


def _tables(sync_url: str) -> list[str]:
    with psycopg.connect(sync_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("select tablename from pg_tables where schemaname = 'public'")
        return [str(r[0]) for r in rows]


def test_pool_hands_out_fresh_clones_fast_and_drops_them(
    url_harness: Harness, url_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    pool = url_harness.pool
    first = pool.acquire()  # the first may wait for the pool to fill
    pool.release(first)

    handed_out = []
    timings = []
    for _ in range(8):
        assert pool.wait_filled()  # the time a test body gives the pool to refill
        started = time.perf_counter()
        database = pool.acquire()
        timings.append(time.perf_counter() - started)
        handed_out.append(database)
        assert _tables(database.sync_url) == ["pool_items"]
        pool.release(database)

    names = [d.name for d in handed_out]
    assert len(set(names)) == len(names), "every hand-out is a database nobody used"
    assert all(n.startswith(f"pgh_{url_harness.run.run_id}_main_p") for n in names)
    assert statistics.median(timings) < 0.005, f"hand-out times (s): {timings}"
    url_harness.close()
    left = database_names(url_admin, f"pgh_{url_harness.run.run_id}%")
    assert left == set(), f"closing the harness drops every clone it made; left: {left}"


def test_repr_masks_the_password() -> None:
    from pgharness._databases import PgDatabase

    database = PgDatabase(
        name="pgh_0123456789_main",
        url="postgresql+asyncpg://me:s3cret@db/pgh_0123456789_main",
        sync_url="postgresql+psycopg://me:s3cret@db/pgh_0123456789_main",
    )

    assert "s3cret" not in repr(database)
    assert "pgh_0123456789_main" in repr(database)


def test_foreign_databases_are_never_touched(
    project: pytest.Pytester, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    suffix = uuid.uuid4().hex[:6]
    foreign = [f"pghforeign_{suffix}", f"pgh_legacy_{suffix}", f"pgh_tpl_not_ours_{suffix}"]
    for name in foreign:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        project.makepyfile("def test_it(pg_database):\n    pass\n")
        result = project.runpytest(f"--pg-url={EXTERNAL_URL}")
        result.assert_outcomes(passed=1)
        assert set(foreign) <= database_names(admin)
    finally:
        for name in foreign:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


BLOCKING_TEST = """
    import json, os, select

    def test_blocks(pg_database, _pg_session):
        pooled = _pg_session.pool.acquire()
        go = os.open(os.environ["GO_FIFO"], os.O_RDONLY | os.O_NONBLOCK)
        with open(os.environ["READY_FIFO"], "w") as ready:
            ready.write(json.dumps({"database": pg_database.name, "pooled": pooled.name,
                                    "url": pg_database.sync_url}))
        select.select([go], [], [])  # until the outer test says go (or kills this run)
"""


class BlockedRun:
    """A pytest run in a subprocess, stopped inside a test until released or killed."""

    def __init__(self, project: pytest.Pytester, *args: str) -> None:
        self.ready = project.path / f"ready-{uuid.uuid4().hex[:6]}"
        self.go = project.path / f"go-{uuid.uuid4().hex[:6]}"
        os.mkfifo(self.ready)
        os.mkfifo(self.go)
        env = {**os.environ, "READY_FIFO": str(self.ready), "GO_FIFO": str(self.go)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
            cwd=project.path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.info: dict[str, str] = json.loads(self._read_ready())

    def _read_ready(self) -> str:
        # Wait for the test to report from inside its body, or for the run to end early.
        fd = os.open(self.ready, os.O_RDONLY | os.O_NONBLOCK)
        chunks: list[bytes] = []
        try:
            while True:
                readable, _, _ = select.select([fd], [], [], 1.0)
                if readable:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        chunks.append(chunk)
                    elif chunks:
                        return b"".join(chunks).decode()
                if self.process.poll() is not None:
                    out = self.process.stdout.read().decode() if self.process.stdout else ""
                    raise AssertionError(f"the blocked run ended early:\n{out}")
        finally:
            os.close(fd)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def release(self) -> str:
        try:
            fd = os.open(self.go, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            pass  # nobody is waiting: the run already ended
        else:
            os.write(fd, b"go")
            os.close(fd)
        try:
            out, _ = self.process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return out.decode()


def test_a_server_by_url_recovers_from_a_killed_run_but_spares_a_live_one(
    project: pytest.Pytester, url: str, url_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    project.makepyfile(test_block=BLOCKING_TEST)
    killed = BlockedRun(project, f"--pg-url={url}")
    killed.kill()
    leftovers = {killed.info["database"], killed.info["pooled"]}
    assert leftovers <= database_names(url_admin), "a SIGKILL leaves its databases behind"
    # Wait until the server has noticed the dead client (its session locks are released).
    run_key = advisory_key("run", killed.info["database"].split("_")[1])
    url_admin.execute("SELECT pg_advisory_lock(%s)", (run_key,))
    url_admin.execute("SELECT pg_advisory_unlock(%s)", (run_key,))

    live = BlockedRun(project, f"--pg-url={url}")  # the next run, still going
    _wait_for_run_lock(url_admin, killed.info["database"].split("_")[1])  # its cleanup is done
    try:
        assert not (leftovers & database_names(url_admin)), (
            "the next run drops a dead run's databases"
        )
        project.makepyfile(test_other="def test_other(pg_database):\n    pass\n")
        concurrent = project.runpytest_subprocess(f"--pg-url={url}", "test_other.py")

        concurrent.assert_outcomes(passed=1)
        assert {live.info["database"], live.info["pooled"]} <= database_names(url_admin), (
            "a run still going is spared"
        )
        assert live.info["database"] != killed.info["database"]
    finally:
        output = live.release()
    assert "1 passed" in output
    assert live.info["database"] not in database_names(url_admin)


def test_embedded_server_of_a_killed_run_is_stopped_and_removed_by_the_next(
    project: pytest.Pytester, runtime_dir: Path
) -> None:
    project.makepyfile(test_block=BLOCKING_TEST)
    killed = BlockedRun(project)
    killed.kill()
    (killed_run,) = run_dirs(runtime_dir)
    killed_dir = runtime_dir / killed_run
    assert postgres_running_in(killed_dir), "a SIGKILL leaves the server running"
    postmaster = int((killed_dir / "data" / "postmaster.pid").read_text().split()[0])
    project.makepyfile(test_block="def test_after(pg_database):\n    pass\n")

    after = project.runpytest_subprocess()

    after.assert_outcomes(passed=1)
    assert not killed_dir.exists()
    assert run_dirs(runtime_dir) == set()
    assert not process_running(postmaster), "the dead run's server is stopped"


# -- the warm pool for pg_isolation("database") ----------------------------------------------

DATABASE_TESTS = """
    import os

    import psycopg
    import pytest


    def _connect(pg_database):
        return psycopg.connect(pg_database.sync_url.replace("+psycopg", ""), autocommit=True)


    @pytest.mark.parametrize("n", range(12))
    @pytest.mark.pg_isolation("database")
    def test_whole_database(pg_database, n):
        with open(os.environ["NAMES_FILE"], "a") as out:
            out.write(pg_database.name + "\\n")
        with _connect(pg_database) as conn:
            conn.execute("INSERT INTO pool_items (id) VALUES (1)")  # a used database has a row
            assert conn.execute("SELECT count(*) FROM pool_items").fetchone() == (1,)
"""


def _pool_project(project: pytest.Pytester) -> None:
    project.makepyfile(pool_models=MODELS)
    project.makeini("[pytest]\npythonpath = .\npgharness_schema = pool_models:Base\n")


def test_pool_hands_each_test_an_unused_database_and_drops_them_all(
    project: pytest.Pytester,
    url: str,
    url_admin: psycopg.Connection[tuple[object, ...]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _pool_project(project)
    project.makepyfile(test_whole=DATABASE_TESTS)
    names_file = project.path / "names.txt"
    monkeypatch.setenv("NAMES_FILE", str(names_file))

    result = project.runpytest_subprocess(f"--pg-url={url}", "-p", "no:randomly")

    result.assert_outcomes(passed=12)
    names = names_file.read_text().split()
    assert len(set(names)) == 12, f"a database was handed out twice: {names}"
    run = names[0].split("_")[1]
    assert database_names(url_admin, f"pgh_{run}%") == set(), "every pooled database is dropped"


def test_pool_refuses_a_database_it_did_not_hand_out(url_harness: Harness) -> None:
    from pgharness._databases import PgDatabase

    pool = url_harness.pool
    database = pool.acquire()
    pool.release(database)

    with pytest.raises(ValueError, match="not handed out"):
        pool.release(database)  # a second release would put it in line to be dropped twice
    stranger = PgDatabase.on(url_harness.server.address, url_harness.run.worker_database)
    with pytest.raises(ValueError, match="not handed out"):
        pool.release(stranger)


def test_released_databases_are_dropped_while_the_run_goes_on(
    url_harness: Harness, url_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    pool = url_harness.pool
    released = []
    for _ in range(5):
        database = pool.acquire()
        released.append(database.name)
        pool.release(database)

    assert pool.wait_dropped()
    assert not set(released) & database_names(url_admin, "pgh_%"), "released databases are dropped"
    fresh = pool.acquire()
    assert fresh.name not in released
    assert _tables(fresh.sync_url) == ["pool_items"]
    pool.release(fresh)


def test_clone_strategy_copies_files_only_where_checkpoints_are_free(
    admin: psycopg.Connection[tuple[object, ...]], runtime_dir: Path
) -> None:
    from pgharness._databases import clone_strategy
    from pgharness._embedded import EmbeddedServer

    fsync = admin.execute("SELECT current_setting('fsync')").fetchone()
    assert clone_strategy(admin) == ("FILE_COPY" if fsync == ("off",) else None)
    embedded = EmbeddedServer(RunIdentity.for_process(None).run_id)
    try:
        with embedded.address.connect() as conn:
            assert clone_strategy(conn) == "FILE_COPY"  # fsync is off on the embedded server
    finally:
        embedded.close()


def _wait_for_run_lock(admin: psycopg.Connection[tuple[object, ...]], run: str) -> None:
    """Until no connection holds ``run``'s lock: its own, or a cleaner's dropping its databases."""
    key = advisory_key("run", run)
    admin.execute("SELECT pg_advisory_lock(%s)", (key,))
    admin.execute("SELECT pg_advisory_unlock(%s)", (key,))


KILLED_WITH_A_FULL_POOL = """
    import json, os, select

    import pytest


    @pytest.mark.parametrize("n", range(6))
    @pytest.mark.pg_isolation("database")
    def test_blocks(pg_database, _pg_session, n):
        assert _pg_session.pool.wait_filled()  # the pool holds ready clones too
        go = os.open(os.environ["GO_FIFO"], os.O_RDONLY | os.O_NONBLOCK)
        with open(os.environ["READY_FIFO"], "w") as ready:
            ready.write(json.dumps({"database": pg_database.name}))
        select.select([go], [], [])  # until killed
"""


def test_a_killed_runs_pool_databases_are_dropped_by_the_next_run(
    project: pytest.Pytester, url: str, url_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    _pool_project(project)
    project.makepyfile(test_block=KILLED_WITH_A_FULL_POOL)
    killed = BlockedRun(project, f"--pg-url={url}")
    run = killed.info["database"].split("_")[1]
    killed.kill()
    pooled = {n for n in database_names(url_admin, f"pgh_{run}%") if "_p" in n}
    assert len(pooled) >= 3, f"the test's database and ready clones are left behind: {pooled}"
    _wait_for_run_lock(url_admin, run)  # the server has noticed the dead client's connections
    project.makepyfile(test_block="def test_after(pg_database):\n    pass\n")

    after = project.runpytest_subprocess(f"--pg-url={url}")

    after.assert_outcomes(passed=1)
    _wait_for_run_lock(url_admin, run)  # another run on this shared server may be the one dropping
    assert database_names(url_admin, f"pgh_{run}%") == set()
