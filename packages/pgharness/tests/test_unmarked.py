"""Async tests no plugin runs stop the run once, before the first test, naming the fix."""

from __future__ import annotations

import pytest
from _isolation_project import make_project

UNMARKED_TESTS = """
import pytest
from sqlalchemy import select

import myapp


@pytest.mark.parametrize("n", range(6))
async def test_unmarked(async_db, n):
    assert await async_db.scalar(select(myapp.User)) is None


@pytest.mark.asyncio
async def test_marked(async_db):
    pass


def test_sync(db):
    pass
"""


def test_strict_mode_with_unmarked_async_tests_is_one_message_for_the_run(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, "asyncio_mode = strict\nasyncio_default_fixture_loop_scope = function")
    pytester.makepyfile(test_strict=UNMARKED_TESTS)

    result = pytester.runpytest_subprocess("-p", "no:randomly")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert output.count("would not run") == 1
    assert (
        "pgharness: 6 async tests would not run: asyncio_mode = strict (pytest-asyncio's "
        "default) runs only async tests marked @pytest.mark.asyncio, and no plugin runs them:"
    ) in output
    assert "test_strict.py::test_unmarked[0]" in output
    assert "test_strict.py::test_marked" not in output
    assert "  (and 1 more)" in output
    assert (
        "Fix: set asyncio_mode = auto in [tool.pytest.ini_options] (pytest-asyncio then runs "
        "every async test); or mark them: pytestmark = pytest.mark.asyncio at the top of each "
        "module, or @pytest.mark.asyncio on each test."
    ) in output
    assert "Traceback" not in output
    result.assert_outcomes()  # nothing ran, nothing errored one by one


def test_without_pytest_asyncio_the_message_names_anyio_and_the_install(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester)
    pytester.makepyfile(test_plain=UNMARKED_TESTS.replace("@pytest.mark.asyncio\n", ""))

    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:asyncio")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert "pgharness: 7 async tests would not run: pytest-asyncio is not active" in output
    assert "  (and 2 more)" in output
    assert "Fix: install pytest-asyncio and set asyncio_mode = auto" in output


def test_under_xdist_the_message_is_shown_once(pytester: pytest.Pytester) -> None:
    make_project(pytester, "asyncio_mode = strict\nasyncio_default_fixture_loop_scope = function")
    pytester.makepyfile(test_strict=UNMARKED_TESTS)

    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2")

    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "INTERNALERROR" not in output
    assert output.count("6 async tests would not run") == 1
