"""What the doctor reports: a finding, and whether it is a problem or advice."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Finding", "Severity"]


class Severity(Enum):
    #: The tests cannot work this way: the doctor exits with status 1.
    PROBLEM = "problem"
    #: Worth changing, but tests can pass as they are: exit status 0.
    ADVICE = "advice"


@dataclass(frozen=True)
class Finding:
    """One thing the doctor found: what, where (``file:line``, when there is a place) and
    the fix."""

    check: str
    what: str
    fix: str
    where: str | None = None
    severity: Severity = Severity.PROBLEM
