"""pgharness's pytest hooks: options, ini keys, markers, settings checks, report header.

The fixtures live in ``fixtures.py``; this module imports them so that pytest finds them
through the ``pytest11`` entry point. Nothing here starts a server or imports application
code: that happens the first time a test asks for a pgharness fixture.
"""

from __future__ import annotations

import pytest

from .fixtures import *  # noqa: F403  (pytest discovers fixtures in the plugin module)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgharness", "PostgreSQL test harness")
    # [part 1: server / template options]
    # [part 2: isolation options]
    # [part 3: diagnostics options]
    del group


def pytest_configure(config: pytest.Config) -> None:
    # [part 1: settings checks and harness state]
    # [part 2: pg_isolation marker]
    # [part 3: pg_max_queries marker, doctor]
    del config
