"""`make bench` in miniature: every contender's suite passes, every table and chart is written.

The figures of a tiny run mean nothing; what this proves is that the full run would measure
what the page says it measures (each strategy's generated tests assert what they can see, so
a strategy that failed to isolate would fail its suite and this test) and that the page keeps
the section ``load.py`` owns.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
STRATEGIES = ("none", "transaction", "database", "truncate", "create_database", "guide")
LOAD_SECTION = "## Dashtam under load\n\nKept as written by load.py.\n"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(1200)
def test_a_quick_run_writes_every_table_and_chart_and_keeps_the_load_section(
    tmp_path: Path,
) -> None:
    (tmp_path / "benchmarks.md").write_text("# Benchmarks\n\nold text\n\n" + LOAD_SECTION)

    done = subprocess.run(
        [sys.executable, str(HERE / "report.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    page = (tmp_path / "benchmarks.md").read_text()
    assert "old text" not in page
    assert page.endswith(LOAD_SECTION)
    for heading in (
        "## Goals",
        "## Machine and versions",
        "## Isolation strategies",
        "### Workers",
        "### Rows per test",
        "### Schema size",
        "## Start-up",
        "## Dashtam's suite: sync style vs. async style",
        "## Diagnostics",
        "## Dashtam against its bare stack",
        "## Raw runs",
    ):
        assert heading in page
    for strategy in (*STRATEGIES, "pytest_sqla", "handwritten"):
        assert f"| `{strategy}` |" in page
    for setting in ("### Embedded server, per-test loop", "### Embedded server, session loop"):
        assert setting in page
    for goal in ("1.10x the floor", "2x the floor", "pytest-sqla", "1.7x one"):
        assert goal in page
    for app in ("dashtam", "bare"):
        assert f"| `GET /api/v1/providers` | {app} |" in page
    charts = sorted(path.name for path in (tmp_path / "benchmarks").glob("*.png"))
    assert charts == [
        "isolation-session.png",
        "isolation.png",
        "rows.png",
        "schema.png",
        "startup.png",
        "styles.png",
        "throughput.png",
        "workers.png",
    ]
    for chart in charts:
        assert (tmp_path / "benchmarks" / chart).read_bytes().startswith(PNG_MAGIC)
        assert f"](benchmarks/{chart})" in page
