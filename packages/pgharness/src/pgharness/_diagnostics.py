"""Failure explanations: turn the cryptic async-database errors into their cause and fix.

``explain_failure`` is called for failed test reports only. It looks through the whole
exception tree (causes, contexts, exception groups: errors raised inside an app reach the
test wrapped) for the errors this module knows, and returns the text of a ``pgharness``
report section, or ``None``. The original traceback is left as it is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest._code.code import ExceptionRepr

from ._errors import CrossLoopError, PgHarnessError
from ._greenlet import explain_missing_greenlet, is_missing_greenlet
from ._loop_trouble import (
    classify_loop_trouble,
    explain_loop_trouble,
    name_fixtures_on_other_loops,
)
from ._loops import is_async_test
from ._tracebacks import iter_exceptions, message_of

__all__ = ["SECTION_TITLE", "add_report_section", "explain_failure", "safe_explain_failure"]

SECTION_TITLE = "pgharness"


def explain_failure(exc: BaseException, item: pytest.Item) -> str | None:
    rootdir: Path | None = item.config.rootpath
    explanations: list[str] = []
    for candidate in iter_exceptions(exc):
        if isinstance(candidate, CrossLoopError):
            # The error names the fix; add which of the test's fixtures are on another loop.
            return name_fixtures_on_other_loops(item)
        if isinstance(candidate, PgHarnessError):
            return None  # pgharness's own errors already say what happened and the fix
        if is_missing_greenlet(candidate):
            explanations.append(
                explain_missing_greenlet(
                    candidate, rootdir, item.path, sync_test=not is_async_test(item)
                )
            )
            break
        trouble = classify_loop_trouble(candidate)
        if trouble is not None:
            explanations.append(explain_loop_trouble(candidate, trouble, item, rootdir))
            break
    if not explanations:
        return None
    return "\n\n".join(explanations)


def safe_explain_failure(exc: BaseException, item: pytest.Item) -> str | None:
    """Never let an explanation hide the failure it explains.

    The report already holds the test's error and traceback when this runs; an explanation
    only adds a section under them. Whatever goes wrong while explaining is said in that
    section, in one line, and nothing escapes into pytest's reporting.
    """
    try:
        return explain_failure(exc, item)
    except Exception as error:  # the report must survive whatever the frames hold
        detail = message_of(error)
        return (
            "(pgharness could not explain this failure: "
            f"{type(error).__name__}{': ' + detail if detail else ''}; the error above is the"
            " test's own)"
        )


def add_report_section(report: pytest.TestReport, text: str) -> None:
    """Append the explanation under the traceback (kept with --show-capture=no and xdist)."""
    longrepr = report.longrepr
    if isinstance(longrepr, ExceptionRepr):
        longrepr.addsection(SECTION_TITLE, text)
    else:
        report.sections.append((SECTION_TITLE, text))
