"""Async tests that no plugin runs: unmarked under pytest-asyncio's strict mode (its default),
or unmarked for anyio without pytest-asyncio.

Such a test can never run, so the whole run is misconfigured: the run stops before the first
test with one message naming the tests and the setting that fixes them all, and the doctor
reports the same cause from the test files' source, before anything is collected.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MAX_NAMED", "unmarked_async_tests_message"]

#: How many tests a message names before it only counts the rest.
MAX_NAMED = 5


def unmarked_async_tests_message(mode: str, tests: Sequence[str]) -> str:
    """Why ``tests`` (node ids or ``file:line`` locations) cannot run, and the fix.

    ``mode`` is pytest-asyncio's mode as the run sees it (``""``: pytest-asyncio not active).
    """
    count = len(tests)
    plural = "s" if count != 1 else ""
    if mode == "strict":
        cause = (
            "asyncio_mode = strict (pytest-asyncio's default) runs only async tests marked "
            "@pytest.mark.asyncio"
        )
        fix = (
            "set asyncio_mode = auto in [tool.pytest.ini_options] (pytest-asyncio then runs "
            "every async test); or mark them: pytestmark = pytest.mark.asyncio at the top of "
            "each module, or @pytest.mark.asyncio on each test."
        )
    else:
        cause = (
            "pytest-asyncio is not active in this run, and anyio's plugin runs only tests "
            "marked @pytest.mark.anyio"
        )
        fix = (
            "install pytest-asyncio and set asyncio_mode = auto in [tool.pytest.ini_options]; "
            "or mark them @pytest.mark.anyio (anyio's plugin)."
        )
    named = [f"  {test}" for test in tests[:MAX_NAMED]]
    if count > MAX_NAMED:
        named.append(f"  (and {count - MAX_NAMED} more)")
    return "\n".join(
        [
            f"pgharness: {count} async test{plural} would not run: {cause}, and no plugin "
            f"runs {'them' if count != 1 else 'it'}:",
            *named,
            f"Fix: {fix}",
        ]
    )
