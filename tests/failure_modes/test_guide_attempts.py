"""The troubleshooting guide's five attempts, run: each fails as the guide says, pgharness passes.

Each test writes the guide's project (``guide_project.py``) with one attempt's ``conftest.py``
and runs it in a subprocess with plain pytest-asyncio (``-p no:pgharness``): it fails with the
error the guide documented. Then it swaps that conftest for pgharness's configuration and runs
the very same test module again: every test passes. The explanations pgharness adds to such
failures are tested in pgharness's own suite (``test_diagnostics_*.py``).
"""

from __future__ import annotations

import pytest

from tests.failure_modes.guide_project import (
    ATTEMPTS,
    PGHARNESS_CONFTEST,
    PLAIN_INI,
    TESTS,
    Attempt,
    app_sources,
    pgharness_ini,
)

pytestmark = pytest.mark.pg_isolation("database")  # inner runs commit for real

INNER_TESTS = TESTS.count("\nasync def test_")
# The guide's project has none of Dashtam's test tools (schemathesis loads Hypothesis: a second
# of CPU per run). Python's own traceback format still shows each error's message; pytest's,
# which reads the source of every frame through SQLAlchemy, costs seconds per failing test.
QUIET = (
    *("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:xdist"),
    *("-p", "no:schemathesis", "-p", "no:hypothesispytest", "--tb=native"),
)


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=lambda a: f"step{a.step}")
def test_the_guides_attempt_fails_as_documented_and_passes_under_pgharness(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    guide_database: str,
    server_url: str,
    attempt: Attempt,
) -> None:
    # The inner runs see their own ini only, not this run's options or server.
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.delenv("PGHARNESS_URL", raising=False)
    # conftest.py is rewritten between the two runs, maybe within the second a cache could tell.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    pytester.makepyfile(**app_sources(guide_database))
    pytester.makeini(PLAIN_INI)
    pytester.makeconftest(attempt.conftest.replace("DATABASE_URL", guide_database))

    plain = pytester.runpytest_subprocess(*QUIET, "-p", "no:pgharness")

    assert plain.ret == pytest.ExitCode.TESTS_FAILED, plain.stdout.str()
    assert plain.parseoutcomes().get("failed", 0) + plain.parseoutcomes().get("errors", 0) >= 1
    plain.stdout.fnmatch_lines([f"*{attempt.documented_error}*"])

    pytester.makeini(pgharness_ini(server_url))
    pytester.makeconftest(PGHARNESS_CONFTEST)

    harnessed = pytester.runpytest_subprocess(*QUIET)

    harnessed.assert_outcomes(passed=INNER_TESTS)
