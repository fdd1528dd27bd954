"""PostgreSQL restarted under load: clean 503s in the gap, recovery, no acknowledged write lost.

Runs ``benchmarks/load.py --faults`` briefly: its own embedded PostgreSQL and
``dashtam serve --workers 2`` in subprocesses (nothing shared with the test database).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_FAST_FAULTS = ("--faults", "--clients", "4", "--duration", "6", "--no-docs")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load.py"


def test_database_restart_under_load_keeps_every_promise() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *_FAST_FAULTS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "Recovered by itself: yes" in report
    assert "0 missing" in report
