"""Async tests that no plugin runs: unmarked under pytest-asyncio's strict mode (its default),
or unmarked for anyio without pytest-asyncio.

Such a test can never run, so the whole run is misconfigured: the run stops before the first
test with one message naming the tests and the setting that fixes them all, and the doctor
reports the same cause, with the same fix, from the test files' source.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MAX_NAMED", "fix_for", "named_tests", "unmarked_async_tests_message", "why_unrun"]

#: How many tests a message names before it only counts the rest.
MAX_NAMED = 5


def why_unrun(mode: str) -> str:
    """Why no plugin runs an unmarked async test; ``mode`` is pytest-asyncio's mode as the run
    sees it (``""``: pytest-asyncio not active)."""
    if mode == "strict":
        return (
            "asyncio_mode = strict (pytest-asyncio's default) runs only async tests marked "
            "@pytest.mark.asyncio"
        )
    return (
        "pytest-asyncio is not active in this run, and anyio's plugin runs only tests "
        "marked @pytest.mark.anyio"
    )


def fix_for(mode: str) -> str:
    if mode == "strict":
        return (
            "set asyncio_mode = auto in [tool.pytest.ini_options] (pytest-asyncio then runs "
            "every async test); or mark them: pytestmark = pytest.mark.asyncio at the top of "
            "each module, or @pytest.mark.asyncio on each test."
        )
    return (
        "install pytest-asyncio and set asyncio_mode = auto in [tool.pytest.ini_options]; "
        "or mark them @pytest.mark.anyio (anyio's plugin)."
    )


def named_tests(tests: Sequence[str]) -> list[str]:
    """The first tests by name, then how many more."""
    named = [f"  {test}" for test in tests[:MAX_NAMED]]
    if len(tests) > MAX_NAMED:
        named.append(f"  (and {len(tests) - MAX_NAMED} more)")
    return named


def unmarked_async_tests_message(mode: str, tests: Sequence[str]) -> str:
    """The run's one message for ``tests`` (node ids): the cause, the tests, the fix."""
    count = len(tests)
    plural = "s" if count != 1 else ""
    return "\n".join(
        [
            f"pgharness: {count} async test{plural} would not run: {why_unrun(mode)}, and no "
            f"plugin runs {'them' if count != 1 else 'it'}:",
            *named_tests(tests),
            f"Fix: {fix_for(mode)}",
        ]
    )
