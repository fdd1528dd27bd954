"""pgharness's pytest hooks: options, ini keys, markers, settings checks, report header.

The fixtures live in ``fixtures.py``; this module imports them so that pytest finds them
through the ``pytest11`` entry point. Nothing here starts a server or imports application
code: that happens the first time a test asks for a pgharness fixture.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from . import _blocker as blocker
from ._activation import BLOCKED_REPORTED, count_database_tests, wants_isolation
from ._config import Settings, command_line_option, ini_keys, read_settings
from ._diagnostics import add_report_section, safe_explain_failure
from ._errors import ConfigurationError, UnmanagedDatabaseError
from ._harness import Harness
from ._isolation import BOTH_KINDS_NOTE, IsolationMode
from ._loops import asyncio_mode, is_async_test, loop_of_test
from ._names import RunIdentity
from ._queries import enforce_max_queries, max_queries, recording_for
from ._tracebacks import iter_exceptions
from ._unmarked import unmarked_async_tests_message
from .fixtures import *  # noqa: F403  (pytest discovers fixtures in the plugin module)
from .fixtures import (
    BLOCKING_KEY,
    HARNESS_KEY,
    POLICY_KEY,
    REQUIRED_MODE_KEY,
    SETTINGS_KEY,
    block_unmanaged_databases,
    start_or_stop,
    stop_run,
    watch_for_escapes,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgharness", "PostgreSQL test harness")
    group.addoption(
        "--pg-url",
        dest="pg_url",
        default=None,
        metavar="URL",
        help="PostgreSQL server to put test databases on (any SQLAlchemy driver prefix); "
        "beats PGHARNESS_URL and the pgharness_url ini key. Default: an embedded server.",
    )
    parser.addini(
        "pgharness_url",
        "PostgreSQL server URL (absent: start an embedded server once per run)",
        type="string",
        default="",
    )
    parser.addini(
        "pgharness_schema",
        "schema source: 'pkg.module:Base' (create_all) or 'alembic:path/to/alembic.ini'",
        type="string",
        default="",
    )
    parser.addini(
        "pgharness_sessionmakers",
        "the app's sessionmakers, one 'pkg.module:attr' per line",
        type="linelist",
        default=[],
    )
    parser.addini(
        "pgharness_app",
        "the ASGI app (or a zero-argument factory) as 'pkg.module:attr'",
        type="string",
        default="",
    )
    parser.addini(
        "pgharness_setup_sql",
        "SQL run in the template database before the schema is built (extensions, roles)",
        type="string",
        default="",
    )
    parser.addini(
        "pgharness_allow_urls",
        "external databases tests may connect to on purpose, one URL per line (every other "
        "database pgharness did not create is blocked)",
        type="linelist",
        default=[],
    )
    parser.addini(
        "pgharness_client_base_url",
        "where client / async_client requests go, e.g. http://testserver/v1 "
        "(default http://testserver)",
        type="string",
        default="",
    )
    parser.addini(
        "pgharness_client_headers",
        "headers client / async_client send with every request, one 'Name: value' per line",
        type="linelist",
        default=[],
    )
    parser.addini(
        "pgharness_lifespan",
        "'on' (default): client / async_client run the app's lifespan; 'off': they skip it",
        type="string",
        default="",
    )
    group.addoption(
        "--pg-doctor",
        action="store_true",
        dest="pg_doctor",
        default=False,
        help="inspect the settings, the app, env.py and the tests for set-ups that make "
        "database tests fail; print problems and advice with their fixes and exit without "
        "running tests (status 1 if there is a problem; advice alone: 0).",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None]:
    # Before the first conftest.py loads: an app imported there that connects at import time
    # (``create_all`` on its engine, say) is stopped like any other unmanaged connection.
    _settings_and_blocker(early_config)
    try:
        return (yield)
    except BaseException:
        # The run ends before pytest_configure, so no pytest_unconfigure will switch it off.
        _unblock(early_config)
        raise


def pytest_configure(config: pytest.Config) -> None:
    settings = _settings_and_blocker(config)
    if settings is not None:
        # Here, not earlier: an xdist worker learns who it is only after conftests load.
        run = RunIdentity.for_process(getattr(config, "workerinput", None))
        config.stash[HARNESS_KEY] = Harness(settings, run)
    config.addinivalue_line(
        "markers",
        'pg_isolation(mode="transaction"): "transaction" (default) rolls the test\'s writes '
        'back even when the code commits; "database" gives the test a whole database of its '
        "own from the warm pool, with real commits and several connections.",
    )
    config.addinivalue_line(
        "markers",
        "pg_max_queries(n): fail the test if it runs more than n SQL statements, listing them "
        "(the harness's own BEGIN/SAVEPOINT/RELEASE/ROLLBACK are not counted).",
    )


def _settings_and_blocker(config: pytest.Config) -> Settings | None:
    """The run's settings (read once); the blocker goes on if a setting activates pgharness,
    otherwise it watches."""
    if SETTINGS_KEY in config.stash:
        return config.stash[SETTINGS_KEY]
    if command_line_option(config, "pg_doctor", False):
        return None  # the doctor reads the settings itself and reports what is wrong with them
    try:
        settings = read_settings(config)
    except ConfigurationError as exc:
        if command_line_option(config, "help", False):
            return None  # --help works whatever the settings
        message = str(exc) if str(exc).startswith("pgharness") else f"pgharness: {exc}"
        raise pytest.UsageError(message) from None
    config.stash[SETTINGS_KEY] = settings
    config.stash[POLICY_KEY] = blocker.Policy(
        allow=settings.allow_urls,
        sessionmakers=tuple(str(ref) for ref in settings.sessionmakers),
        rootpath=config.rootpath,
    )
    if command_line_option(config, "pg_url", None) or any(
        key.startswith("pgharness") for key in ini_keys(config)
    ):
        block_unmanaged_databases(config)
    else:
        # Active only if some test uses pgharness: what connects before then is remembered,
        # and stops the run if that happens.
        watch_for_escapes(config)
    return settings


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and config.getoption("dist", "no") != "no"


def pytest_report_header(config: pytest.Config) -> str | None:
    harness = config.stash.get(HARNESS_KEY, None)
    if harness is None:
        return None
    return f"pgharness: {harness.settings.server_description()}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    # Start before the first test (so its time is not charged to that test, and the report
    # can say what happened), but only when some test will use PostgreSQL.
    harness = config.stash.get(HARNESS_KEY, None)
    if harness is None or _is_xdist_controller(config) or _only_lists(config):
        return
    unmarked = [
        item.nodeid
        for item in items
        if wants_isolation(item) and is_async_test(item) and loop_of_test(item) is None
    ]
    if unmarked:
        # One message for the run, not one long error per test.
        stop_run(session, unmarked_async_tests_message(asyncio_mode(config), unmarked))
        config.hook.pytest_deselected(items=list(items))
        items.clear()
    elif any(wants_isolation(item) for item in items) and start_or_stop(harness, session):
        # An xdist worker that could not start runs nothing; the controller reports why.
        config.hook.pytest_deselected(items=list(items))
        items.clear()
    elif harness.started:
        # The warm pool for pg_isolation("database") tests is sized and starts filling now.
        if config.stash.get(REQUIRED_MODE_KEY, None) is IsolationMode.DATABASE:
            harness.expect_database_tests(sum(wants_isolation(item) for item in items))
        else:
            harness.expect_database_tests(count_database_tests(items))


def _only_lists(config: pytest.Config) -> bool:
    """``--collect-only``, ``--fixtures``, ``--fixtures-per-test``: nothing runs, nothing starts."""
    option = config.option
    return bool(
        getattr(option, "collectonly", False)
        or getattr(option, "showfixtures", False)
        or getattr(option, "show_fixtures_per_test", False)
    )


def pytest_report_collectionfinish(config: pytest.Config) -> list[str] | None:
    harness = config.stash.get(HARNESS_KEY, None)
    status = harness.status_line() if harness is not None else None
    if status is None:
        return None
    if config.stash.get(REQUIRED_MODE_KEY, None) is IsolationMode.DATABASE:
        return [status, f"pgharness: {BOTH_KINDS_NOTE}."]
    return [status]


def pytest_unconfigure(config: pytest.Config) -> None:
    harness = config.stash.get(HARNESS_KEY, None)
    try:
        if harness is not None:
            harness.close()
    finally:
        _unblock(config)


def _unblock(config: pytest.Config) -> None:
    if config.stash.get(BLOCKING_KEY, False):
        blocker.deactivate(config.stash[POLICY_KEY])
        config.stash[BLOCKING_KEY] = False


# Under xdist the workers start the server; they hand their status line (or the reason they
# could not start) to the controller, which reports it once.
WORKER_REPORTS_KEY = pytest.StashKey[dict[str, str]]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    workeroutput = getattr(config, "workeroutput", None)
    harness = config.stash.get(HARNESS_KEY, None)
    if workeroutput is not None and harness is not None:
        status = harness.status_line()
        if status is not None:
            workeroutput["pgharness_status"] = status
        return
    reports = config.stash.get(WORKER_REPORTS_KEY, {})
    stopped_by_us = any(str(v).startswith("pgharness") for v in reports.values())
    if stopped_by_us and session.exitstatus == pytest.ExitCode.INTERRUPTED:
        session.exitstatus = pytest.ExitCode.USAGE_ERROR


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    output: dict[str, Any] = getattr(node, "workeroutput", None) or {}
    reports = node.config.stash.setdefault(WORKER_REPORTS_KEY, {})
    worker = str(getattr(getattr(node, "gateway", None), "id", "?"))
    if output.get("pgharness_status"):
        reports[f"status {worker}"] = str(output["pgharness_status"])
    if str(output.get("shouldstop") or "").startswith("pgharness"):
        reports[f"stop {worker}"] = str(output["shouldstop"])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    statuses = sorted(
        (key, line)
        for key, line in config.stash.get(WORKER_REPORTS_KEY, {}).items()
        if key.startswith("status ")
    )
    for key, line in statuses:
        terminalreporter.write_line(line.replace("pgharness:", f"pgharness [{key[7:]}]:", 1))


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if not config.getoption("pg_doctor", False):
        return None
    from ._doctor import format_report, run_doctor

    report = run_doctor(config)
    print(format_report(report), end="")
    return report.exit_status


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    recording = recording_for(item)
    if recording is None:
        return (yield)
    limit = max_queries(item)
    with recording:
        result = yield
    enforce_max_queries(limit, recording)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.excinfo is not None and report.failed:
        if any(isinstance(e, UnmanagedDatabaseError) for e in iter_exceptions(call.excinfo.value)):
            item.stash[BLOCKED_REPORTED] = True  # its message is in this report already
        explanation = safe_explain_failure(call.excinfo.value, item)
        if explanation is not None:
            add_report_section(report, explanation)
    return report
