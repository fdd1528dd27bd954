"""The environment of a reader's shell, for commands run the way the docs tell people to."""

from __future__ import annotations

import os

_SUITE_SETTINGS = ("DASHTAM_", "DATABASE_URL", "PGHARNESS_", "PYTEST_")


def user_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the suite's Dashtam or database settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SUITE_SETTINGS)}
    env.update(extra)
    return env
