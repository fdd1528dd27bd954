"""``make run``'s embedded PostgreSQL as root, in a folder only root may enter.

PostgreSQL refuses to run as root, so it runs as an unprivileged system user that cannot enter
such a folder. The data must still be kept at ``./.dashtam/pgdata`` from one run to the next,
and none of the user's folders may change mode to get there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.environment import user_environment

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="only root runs PostgreSQL as another user",
)

DASHTAM = Path(sys.executable).parent / "dashtam"

# What `make test-up` does with the same folder: a server tuned for tests, started, then asked
# for what the earlier `dashtam migrate` left; then `make test-down`'s removal.
_READ_BACK = """
import sys
from pathlib import Path

import psycopg

from dashtam.core.embedded import EmbeddedPostgres

server = EmbeddedPostgres(Path(".dashtam/pgdata"), for_tests=True)
server.start()
with psycopg.connect(server.url("dashtam")) as conn:
    print("version", conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])
server.remove()
print("kept", Path(".dashtam/pgdata").exists())
"""


def _modes(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mode for path in [folder, *folder.parents]}


def _run(command: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=folder,
        env=user_environment(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_dashtam_keeps_its_database_in_a_folder_only_root_may_enter(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    checkout = private / "checkout"
    checkout.mkdir()
    before = _modes(checkout)

    first = _run([str(DASHTAM), "migrate"], checkout)
    assert first.returncode == 0, first.stderr
    assert "database is at the newest migration" in first.stderr
    again = _run([str(DASHTAM), "migrate"], checkout)  # the kept data, started again
    assert again.returncode == 0, again.stderr

    read_back = _run([sys.executable, "-c", _READ_BACK], checkout)
    assert read_back.returncode == 0, read_back.stderr
    assert "version " in read_back.stdout
    assert "kept False" in read_back.stdout  # removed, wherever the data was kept
    assert _modes(checkout) == before  # no folder of the user was opened up


def test_data_it_cannot_reach_is_refused_with_the_fix(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    checkout = private / "checkout"
    (checkout / ".dashtam" / "pgdata").mkdir(parents=True)  # as an older layout left it

    result = _run([str(DASHTAM), "migrate"], checkout)

    assert result.returncode == 2
    assert "cannot enter a folder above it" in result.stderr
    assert "Fix: run as a normal user" in result.stderr
    assert private.stat().st_mode & 0o777 == 0o700
