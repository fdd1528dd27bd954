"""The doctor: find the set-ups that make database tests fail, before running any test.

``pytest --pg-doctor`` (or ``pgharness doctor``) reads the settings, imports what they name
(schema, sessionmakers, app: a factory is not called), reads the project's source, conftest
and test files, and reports two kinds of findings, each with where it is and the fix:

- **problems**, which stop tests from working (the doctor exits with status 1): a setting
  that cannot work; an Alembic ``env.py`` that migrates another database than the one it is
  given; a sessionmaker of the app that ``pgharness_sessionmakers`` leaves out; async tests
  that no plugin runs (strict mode, unmarked); a lifespan or module global that connects on
  its own;
- **advice** (exit status 0): default lazy loading in an async project, ``expire_on_commit``
  left at its default, pytest-asyncio loop scopes that split fixtures from tests, an ignored
  ``event_loop`` fixture, engines created at import with a pool.
"""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ._config import AlembicSchema, MetadataSchema, ObjectRef, Settings, read_settings
from ._doctor_advice import (
    event_loop_fixtures,
    expire_on_commit,
    lazy_relationships,
    loop_scopes,
    mappers,
    pooled_engines,
)
from ._doctor_alembic import env_py_migrates_elsewhere
from ._doctor_connections import connects_on_its_own
from ._doctor_problems import unconfigured_sessionmakers, unmarked_async_tests
from ._doctor_project import (
    conftest_files,
    globals_of_type,
    ini_location,
    project_modules,
    relative,
    source_of_module,
)
from ._errors import ConfigurationError
from ._finding import Finding, Severity
from ._loops import asyncio_mode

__all__ = ["DoctorReport", "Finding", "Severity", "format_report", "run_doctor"]

_SETTING_NAME = re.compile(r"\bpgharness_[a-z_]+")
_SESSIONMAKER_TYPES = ("async_sessionmaker", "sessionmaker")


@dataclass(frozen=True)
class DoctorReport:
    """What the doctor looked at, and what it found."""

    examined: list[str]
    findings: list[Finding]

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.PROBLEM]

    @property
    def advice(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ADVICE]

    @property
    def exit_status(self) -> int:
        """1 when anything stops the tests from working; advice alone is 0."""
        return 1 if self.problems else 0


def run_doctor(config: pytest.Config) -> DoctorReport:
    rootdir = config.rootpath
    findings: list[Finding] = []
    _importable_as_in_a_run(rootdir)
    loaded = _load_targets(config, findings)
    modules = [m for m in project_modules(rootdir) if not _is_test_module(m)]
    configured = loaded.sessionmakers
    unconfigured = [
        (name, maker)
        for kind in _SESSIONMAKER_TYPES
        for name, maker in globals_of_type(modules, kind)
        if all(maker is not known for _, known in configured)
    ]
    engines = globals_of_type(modules, "AsyncEngine")
    uses_async = bool(engines) or any(
        type(maker).__name__ == "async_sessionmaker" for _, maker in configured + unconfigured
    )
    conftests = list(conftest_files(rootdir))
    settings = loaded.settings
    if settings is not None and isinstance(settings.schema, AlembicSchema):
        findings += env_py_migrates_elsewhere(settings.schema, rootdir)
    if settings is not None:
        findings += unconfigured_sessionmakers(unconfigured, configured, rootdir)
    findings += unmarked_async_tests(config)
    findings += connects_on_its_own(
        _source_files(modules, settings, rootdir),
        rootdir,
        lifespan=settings is None or settings.client.lifespan,
    )
    if uses_async:
        findings += lazy_relationships(loaded.schema, rootdir)
    findings += expire_on_commit(configured + unconfigured, rootdir)
    findings += loop_scopes(config, conftests)
    findings += event_loop_fixtures(conftests, rootdir)
    findings += pooled_engines(engines, configured, rootdir)
    return DoctorReport(_examined(config, loaded, unconfigured, engines, conftests), findings)


def _examined(
    config: pytest.Config,
    loaded: _Loaded,
    unconfigured: list[tuple[str, object]],
    engines: list[tuple[str, object]],
    conftests: list[Path],
) -> list[str]:
    settings = loaded.settings
    # As the settings name them, loaded or not: a sessionmaker is listed here only if named.
    configured = ", ".join(str(ref) for ref in settings.sessionmakers) if settings else ""
    mode = asyncio_mode(config) or "not active"
    lines = [
        f"settings: {config.inipath.name if config.inipath else 'no ini file found'}",
        "schema (pgharness_schema): " + (loaded.schema_name or "not configured"),
        "sessionmakers (pgharness_sessionmakers): " + (configured or "none configured"),
    ]
    if unconfigured:
        lines.append(
            "sessionmakers found in the project, not configured: "
            + ", ".join(name for name, _ in unconfigured)
        )
    app = settings.app if settings is not None else None
    lines += [
        f"app (pgharness_app): {app if app is not None else 'not configured'}",
        f"mapped classes: {len(mappers(loaded.schema))}; async engines: {len(engines)}",
        f"conftest.py files: {len(conftests)}; pytest-asyncio mode: {mode}",
    ]
    return lines


def format_report(report: DoctorReport) -> str:
    lines = ["examined:", *(f"  {line}" for line in report.examined), ""]
    if report.problems:
        lines += ["problems (these stop tests from working):", ""]
        lines += _numbered(report.problems)
    if report.advice:
        lines += ["advice (worth changing; tests can pass without it):", ""]
        lines += _numbered(report.advice)
    problems, advice = len(report.problems), len(report.advice)
    found = f"{problems} problem{'s' if problems != 1 else ''}" if problems else "no problems found"
    tail = f", {advice} piece{'s' if advice != 1 else ''} of advice" if advice else ""
    lines.append(f"pgharness doctor: {found}{tail} (exit status {report.exit_status}).")
    return "\n".join(lines) + "\n"


def _numbered(findings: list[Finding]) -> list[str]:
    lines: list[str] = []
    for number, finding in enumerate(findings, start=1):
        lines.append(f"{number}. [{finding.check}] {finding.what}")
        if finding.where:
            lines.append(f"   where: {finding.where}")
        lines += [
            f"   fix: {line}" if i == 0 else f"        {line}"
            for i, line in enumerate(finding.fix.splitlines())
        ]
        lines.append("")
    return lines


# -- what the settings name ------------------------------------------------------------------


@dataclass
class _Loaded:
    settings: Settings | None = None
    schema: object | None = None
    schema_name: str | None = None
    sessionmakers: list[tuple[str, object]] = field(default_factory=list)


def _load_targets(config: pytest.Config, findings: list[Finding]) -> _Loaded:
    """Read the settings and import what they name; each failure is a ``settings`` problem."""
    from ._activation import check_app_objects

    loaded = _Loaded()
    try:
        loaded.settings = settings = read_settings(config)
    except ConfigurationError as exc:
        findings.append(_settings_finding(exc, config))
        return loaded
    if settings.schema is not None:
        schema = settings.schema
        loaded.schema_name = (
            str(schema.ref)
            if isinstance(schema, MetadataSchema)
            else f"alembic:{relative(schema.ini_path, config.rootpath)}"
        )
        if isinstance(schema, MetadataSchema):
            loaded.schema = _load(schema.ref, config, findings)
    for ref in settings.sessionmakers:
        maker = _load(ref, config, findings)
        if maker is not None:
            loaded.sessionmakers.append((str(ref), maker))
    if settings.app is not None:
        _load(settings.app, config, findings)
    if not findings:  # what loads must also be of the right kind
        try:
            check_app_objects(settings)
        except ConfigurationError as exc:
            findings.append(_settings_finding(exc, config))
    return loaded


def _load(ref: ObjectRef, config: pytest.Config, findings: list[Finding]) -> object | None:
    try:
        return ref.load()
    except ConfigurationError as exc:
        findings.append(_settings_finding(exc, config))
        return None


def _settings_finding(exc: ConfigurationError, config: pytest.Config) -> Finding:
    what, _, fix = str(exc).removeprefix("pgharness: ").partition(" Fix: ")
    named = _SETTING_NAME.search(what)
    where = ini_location(config.inipath, config.rootpath, named.group(0)) if named else None
    return Finding("settings", what, fix or "correct the setting named above.", where=where)


def _source_files(
    modules: list[types.ModuleType], settings: Settings | None, rootdir: Path
) -> list[Path]:
    """The project's imported modules, and those the settings name (read even if their import
    failed)."""
    files = [Path(str(m.__file__)) for m in modules]
    refs: list[ObjectRef] = []
    if settings is not None:
        refs = [*settings.sessionmakers, *([settings.app] if settings.app else [])]
        if isinstance(settings.schema, MetadataSchema):
            refs.append(settings.schema.ref)
    for ref in refs:
        path = source_of_module(ref.module, rootdir)
        if path is not None:
            files.append(path)
    unique: dict[Path, None] = {}
    for path in files:
        unique.setdefault(path.resolve(), None)
    return list(unique)


def _importable_as_in_a_run(rootdir: Path) -> None:
    """Let the settings' modules import from the rootdir, as they do in a test run.

    The doctor runs before collection, which is when pytest puts the test files' base
    directory (the rootdir, for tests beside the app or in a ``tests`` package) on
    ``sys.path``; without it a project whose tests pass would be told its modules do not
    import. Appended, so that installed packages still come first.
    """
    if str(rootdir) not in sys.path:
        sys.path.append(str(rootdir))


def _is_test_module(module: types.ModuleType) -> bool:
    """conftest and test modules: their sessionmakers and engines are the old test set-up,
    not the app's."""
    name = Path(str(module.__file__)).name
    return name == "conftest.py" or name.startswith("test_") or name.endswith("_test.py")
