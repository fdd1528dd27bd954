"""``KeptServer``: an embedded PostgreSQL whose data outlives the process that started it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pgharness import KeptServer, ServerError


def _query(server: KeptServer, database: str, sql: str) -> object:
    with psycopg.connect(server.url(database)) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_data_survives_a_restart_and_remove_deletes_it(tmp_path: Path) -> None:
    private = tmp_path / "private"  # as root: a folder PostgreSQL's own user cannot enter
    private.mkdir(mode=0o700)
    # long enough that the socket cannot live beside the data
    data_dir = private / ("long-folder-name-" * 4) / "pgdata"
    server = KeptServer(data_dir, tuned_for_tests=True)
    try:
        server.start()
        assert server.started_here
        # as root the data is kept outside the private folder, linked from where it was named
        assert data_dir.is_symlink() == (os.geteuid() == 0)
        server.ensure_database("kept")
        server.ensure_database("kept")  # already there: nothing to do
        with psycopg.connect(server.url("kept"), autocommit=True) as conn:
            conn.execute("CREATE TABLE notes (body text)")
            conn.execute("INSERT INTO notes VALUES ('still here')")
        assert _query(server, "kept", "SHOW fsync") == "off"
        server.stop()
        server.stop()  # stopped already: nothing to do
        assert not server.is_running()

        again = KeptServer(data_dir)
        again.start()
        again.start()  # running already: reused
        assert again.is_running()
        assert _query(again, "kept", "SELECT body FROM notes") == "still here"
        assert _query(again, "kept", "SHOW fsync") == "on"  # not tuned this time
        assert not str(again.socket_dir).startswith(str(data_dir))
    finally:
        server.remove()
    assert not data_dir.exists()
    assert not data_dir.is_symlink()
    assert private.stat().st_mode & 0o777 == 0o700


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user may traverse (pytest's own temporary folders are private)."""
    folder = Path(tempfile.mkdtemp(prefix="pgharness-kept-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_folder_that_holds_no_cluster_is_refused(open_folder: Path) -> None:
    (open_folder / "pgdata").mkdir()
    (open_folder / "pgdata" / "notes.txt").write_text("not PostgreSQL")

    with pytest.raises(ServerError, match="holds no PostgreSQL data"):
        KeptServer(open_folder / "pgdata").start()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_data_the_server_cannot_reach_is_refused_with_the_fix(tmp_path: Path) -> None:
    private = tmp_path / "private"
    (private / "pgdata").mkdir(parents=True)
    private.chmod(0o700)

    with pytest.raises(ServerError, match="Fix: run as a normal user"):
        KeptServer(private / "pgdata").start()
    assert private.stat().st_mode & 0o777 == 0o700


def test_database_names_are_plain(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="not a plain database name"):
        KeptServer(tmp_path / "pgdata").ensure_database('x"; DROP DATABASE postgres; --')


@pytest.mark.skipif(os.geteuid() != 0, reason="only root keeps data outside the named folder")
def test_data_whose_folder_was_deleted_is_removed_by_the_next_relocation(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir(mode=0o700)
    abandoned = KeptServer(first / "pgdata")
    abandoned.start()
    abandoned.stop()
    kept_in = abandoned.cluster_dir
    shutil.rmtree(first)  # as pytest deletes an old temporary folder: the link goes, not the data
    assert kept_in.exists()

    current = KeptServer(second / "pgdata")
    try:
        current.start()
        assert not kept_in.exists()
        assert current.cluster_dir.exists()
    finally:
        current.remove()
