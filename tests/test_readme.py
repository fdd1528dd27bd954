"""The root README's commands, run: the two make targets exist, and the curl tour works.

The tour is the README's shell block, unchanged but for the port, run with bash against
``dashtam serve`` started as ``make run`` starts it (embedded PostgreSQL in ``./.dashtam/``,
nothing configured), in a scratch folder.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks._support import wait_until_ready
from tests.support.environment import user_environment

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
DEFAULT_ADDRESS = "127.0.0.1:8000"


def _shell_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", README.read_text(encoding="utf-8"), re.M | re.S)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_two_commands_are_make_targets() -> None:
    commands = _shell_blocks()[0]
    assert re.findall(r"^make (\w+)", commands, re.M) == ["run", "test"]
    dry_run = subprocess.run(
        ["make", "-n", "run", "test"],
        cwd=REPOSITORY,
        env=user_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    assert "dashtam serve --worker" in dry_run.stdout
    assert "-m pytest tests" in dry_run.stdout


@pytest.fixture
def served_dashtam(tmp_path: Path) -> Iterator[str]:
    """``dashtam serve --worker`` on a free port, as ``make run`` runs it; yields ``host:port``."""
    address = f"127.0.0.1:{_free_port()}"
    dashtam = Path(sys.executable).parent / "dashtam"
    server = subprocess.Popen(
        [str(dashtam), "serve", "--worker", "--port", address.rsplit(":", 1)[1]],
        cwd=tmp_path,
        env=user_environment(DASHTAM_PUBLIC_URL=f"http://{address}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        log: list[str] = []
        for line in server.stderr:  # uvicorn says when the app has started
            log.append(line)
            if "Application startup complete" in line:
                break
        else:
            pytest.fail("dashtam serve exited before serving:\n" + "".join(log))
        # uvicorn says so before it listens: a request sent at once can find the port closed.
        try:
            wait_until_ready(f"http://{address}", server, 30)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield address
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("jq")), reason="the tour needs curl and jq"
)
def test_the_curl_tour_runs_against_dashtam_serve(served_dashtam: str) -> None:
    tour = _shell_blocks()[1]
    assert DEFAULT_ADDRESS in tour
    completed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", tour.replace(DEFAULT_ADDRESS, served_dashtam)],
        env=user_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout
    assert completed.returncode == 0, completed.stderr + output
    assert '"status":"ok"' in output  # /health
    assert '[{"current":true,"client":"curl/' in output  # the login's session
    assert '["sandbox","schwab"]' in output  # provider types
    assert '{"status":"active","expires_at":"' in output  # connected through the sandbox
    assert '{"status":"succeeded","accounts":2,' in output  # synced
    assert '"number_masked":"****' in output  # the accounts
    assert '{"symbol":"' in output  # their positions
    assert '"amount":"' in output  # a page of transactions, money as decimal strings
    assert '{"dividends":' in output
    assert "HTTP 201" in output  # token refresh
    for step in ("connect started", "callback success", "refresh success"):
        assert step in output  # the audit log
    assert "HTTP 204" in output  # disconnected
    assert output.rstrip().endswith('{"status":"revoked","expires_at":null}')
