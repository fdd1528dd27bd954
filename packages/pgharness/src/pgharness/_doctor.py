"""The doctor: find the set-ups that make async database tests fail, before running any test.

``pytest --pg-doctor`` (or ``pgharness doctor``) imports the configured schema and
sessionmakers (``pgharness_schema``, ``pgharness_sessionmakers``), reads the pytest-asyncio
settings and the ``conftest.py`` files, and reports:

- relationships with default lazy loading in a project that uses ``AsyncSession``;
- async sessionmakers with ``expire_on_commit=True``;
- pytest-asyncio loop scopes that put async fixtures and tests on different loops;
- an ``event_loop`` fixture, which pytest-asyncio >= 1.0 ignores;
- engines created at import time with a pool, whose connections cannot cross loops.
"""

from __future__ import annotations

import ast
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._loops import fixture_loop_scope, is_wider, loop_settings, pytest_asyncio_version

__all__ = ["DoctorReport", "Finding", "format_report", "run_doctor"]

_SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        "node_modules",
        "__pycache__",
        "build",
        "dist",
        "site-packages",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)
_MAX_LISTED = 15


@dataclass(frozen=True)
class Finding:
    """One problem the doctor found, with the fix."""

    check: str
    problem: str
    fix: str


@dataclass(frozen=True)
class DoctorReport:
    """What the doctor looked at, and what it found."""

    examined: list[str]
    findings: list[Finding]


def run_doctor(config: pytest.Config) -> DoctorReport:
    rootdir = config.rootpath
    findings: list[Finding] = []
    loaded = _load_targets(config, findings)
    modules = list(_project_modules(rootdir))
    sessionmakers = loaded.sessionmakers + [
        (f"{name}", value)
        for name, value in _globals_of_type(modules, "async_sessionmaker")
        if all(value is not known for _, known in loaded.sessionmakers)
    ]
    engines = [(name, value) for name, value in _globals_of_type(modules, "AsyncEngine")]
    uses_async = bool(engines) or any(
        type(sm).__name__ == "async_sessionmaker" for _, sm in sessionmakers
    )
    if uses_async:
        findings += _lazy_relationships(loaded.schema)
    findings += _expire_on_commit(sessionmakers)
    conftests = list(_conftest_files(rootdir))
    findings += _loop_scopes(config, conftests, rootdir)
    findings += _event_loop_fixtures(conftests, rootdir)
    findings += _pooled_engines(engines, loaded.sessionmakers)
    findings += _unconfigured_sessionmakers(modules, loaded.sessionmakers)
    examined = [
        f"schema: {loaded.schema_name or 'not configured (pgharness_schema)'}",
        "sessionmakers: "
        + (", ".join(name for name, _ in sessionmakers) or "none found (pgharness_sessionmakers)"),
        f"mapped classes: {len(_mappers(loaded.schema))}; async engines: {len(engines)}",
        f"conftest.py files: {len(conftests)}; pytest-asyncio loop scopes",
    ]
    return DoctorReport(examined, findings)


def format_report(report: DoctorReport) -> str:
    findings = report.findings
    examined = ["examined:", *(f"  {line}" for line in report.examined), ""]
    if not findings:
        return "\n".join([*examined, "pgharness doctor: no problems found."]) + "\n"
    plural = "s" if len(findings) != 1 else ""
    lines = [*examined, f"pgharness doctor: {len(findings)} finding{plural}", ""]
    for number, finding in enumerate(findings, start=1):
        lines.append(f"{number}. [{finding.check}] {finding.problem}")
        lines += [
            f"   fix: {line}" if i == 0 else f"        {line}"
            for i, line in enumerate(finding.fix.splitlines())
        ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# -- what the settings name ------------------------------------------------------------------


@dataclass
class _Loaded:
    schema: object | None
    sessionmakers: list[tuple[str, object]]
    schema_name: str | None = None


def _load_targets(config: pytest.Config, findings: list[Finding]) -> _Loaded:
    from ._config import MetadataSchema, parse_object_ref, parse_schema
    from ._errors import ConfigurationError

    loaded = _Loaded(schema=None, sessionmakers=[])
    schema_text = str(_ini(config, "pgharness_schema") or "").strip()
    try:
        if schema_text:
            schema = parse_schema(schema_text, config.rootpath)
            loaded.schema_name = schema_text
            if isinstance(schema, MetadataSchema):
                loaded.schema = schema.ref.load()
        for line in _ini(config, "pgharness_sessionmakers") or []:
            if str(line).strip():
                ref = parse_object_ref(str(line), "pgharness_sessionmakers")
                loaded.sessionmakers.append((str(ref), ref.load()))
    except ConfigurationError as exc:
        findings.append(Finding("settings", str(exc), "correct the setting named above."))
    return loaded


def _ini(config: pytest.Config, name: str) -> Any:
    try:
        return config.getini(name)
    except ValueError:
        return None


# -- the checks ---------------------------------------------------------------------------------


def _lazy_relationships(schema: object | None) -> list[Finding]:
    lazy: list[str] = []
    for mapper in _mappers(schema):
        for relationship in mapper.relationships:
            if relationship.lazy in ("select", True):
                lazy.append(f"{mapper.class_.__name__}.{relationship.key}")
    if not lazy:
        return []
    shown = ", ".join(sorted(lazy)[:_MAX_LISTED]) + (" ..." if len(lazy) > _MAX_LISTED else "")
    return [
        Finding(
            "lazy-loading",
            f'{len(lazy)} relationship(s) use the default lazy loading (lazy="select") in a'
            f" project that uses AsyncSession: {shown}. Reading one that the query did not load"
            " is implicit IO and fails with MissingGreenlet.",
            "load what you read in the query: `.options(selectinload(Model.rel))`;\n"
            'or set `lazy="raise"` on the relationship so an unloaded read fails clearly'
            ' (or `lazy="selectin"` to always load it);\n'
            "or read it with `await obj.awaitable_attrs.rel` (Base with `AsyncAttrs`).",
        )
    ]


def _mappers(schema: object | None) -> list[Any]:
    registries: list[Any] = []
    own_registry = getattr(schema, "registry", None)
    if own_registry is not None:
        registries.append(own_registry)
    try:
        import importlib

        mapper_module: Any = importlib.import_module("sqlalchemy.orm.mapper")
        registries += [r for r in list(mapper_module._mapper_registries) if r not in registries]
    except (ImportError, AttributeError):
        pass
    mappers: list[Any] = []
    for registry in registries:
        for mapper in sorted(registry.mappers, key=lambda m: m.class_.__name__):
            if mapper not in mappers and not _is_library_class(mapper.class_):
                mappers.append(mapper)
    return mappers


def _is_library_class(cls: type) -> bool:
    return cls.__module__.split(".", 1)[0] in {"sqlalchemy", "pgharness", "alembic"}


def _expire_on_commit(sessionmakers: list[tuple[str, object]]) -> list[Finding]:
    findings = []
    for name, sessionmaker in sessionmakers:
        if type(sessionmaker).__name__ != "async_sessionmaker":
            continue
        options: dict[str, Any] = getattr(sessionmaker, "kw", {})
        if options.get("expire_on_commit", True):
            findings.append(
                Finding(
                    "expire-on-commit",
                    f"async sessionmaker `{name}` has expire_on_commit=True (SQLAlchemy's"
                    " default): every commit() expires the loaded objects, and the next"
                    " attribute read (in a service after commit, or in the route that returns"
                    " the object) is implicit IO: MissingGreenlet.",
                    "`async_sessionmaker(engine, expire_on_commit=False)`;\n"
                    "where fresh values are intended after a commit, `await session.refresh(obj)`.",
                )
            )
    return findings


def _loop_scopes(config: pytest.Config, conftests: list[Path], rootdir: Path) -> list[Finding]:
    settings = loop_settings(config)
    if settings is None:  # pytest-asyncio is not installed
        return []
    test_scope = settings.test_scope
    fixture_default = settings.fixture_scope_setting or ""
    findings: list[Finding] = []
    if is_wider(fixture_default, test_scope):
        findings.append(
            Finding(
                "loop-scope",
                f'asyncio_default_fixture_loop_scope = "{fixture_default}" but'
                f' asyncio_default_test_loop_scope = "{test_scope}": async fixtures run on a'
                f" {fixture_default}-scoped loop and tests on {test_scope}-scoped loops, so a"
                " connection or session a fixture makes fails in the test ('attached to a"
                " different loop').",
                f"set both to the same scope in [tool.pytest.ini_options], e.g."
                f' asyncio_default_test_loop_scope = "{fixture_default}", or'
                f' asyncio_default_fixture_loop_scope = "{test_scope}".',
            )
        )
    for path, lineno, name, scope, loop_scope in _async_fixtures(conftests):
        effective = fixture_loop_scope(loop_scope, scope, settings.fixture_scope_setting)
        if is_wider(effective, test_scope):
            findings.append(
                Finding(
                    "loop-scope",
                    f"async fixture `{name}` ({_relative(path, rootdir)}:{lineno},"
                    f' scope="{scope}") runs on a {effective}-scoped loop while tests run on'
                    f" {test_scope}-scoped"
                    " loops: connections, sessions or pooled engines it creates cannot be used by"
                    " the tests.",
                    "run the tests on the same loop"
                    f' (`@pytest.mark.asyncio(loop_scope="{effective}")` or'
                    f' asyncio_default_test_loop_scope = "{effective}"), or make the fixture'
                    " function-scoped; with pgharness, use `async_db` / `async_client`, which open"
                    " the connection on each test's loop.",
                )
            )
    return findings


def _event_loop_fixtures(conftests: list[Path], rootdir: Path) -> list[Finding]:
    version = pytest_asyncio_version()
    findings = []
    for path in conftests:
        tree = _parse(path)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.name == "event_loop" and any(
                "fixture" in ast.unparse(d) for d in node.decorator_list
            ):
                ignored = "ignores it" if version >= (1, 0) else "deprecates it (removed in 1.0)"
                findings.append(
                    Finding(
                        "event-loop-fixture",
                        f"{_relative(path, rootdir)}:{node.lineno} defines an `event_loop` fixture;"
                        f" pytest-asyncio {_format_version(version)} {ignored}: tests still run on"
                        " their own loops, so a session-scoped loop meant to share connections"
                        " does not exist.",
                        "delete it; choose loops with `loop_scope` instead"
                        ' (`@pytest.mark.asyncio(loop_scope="session")`,'
                        ' `@pytest_asyncio.fixture(loop_scope="session")`, or the'
                        " asyncio_default_*_loop_scope ini keys).",
                    )
                )
    return findings


def _pooled_engines(
    engines: list[tuple[str, Any]], sessionmakers: list[tuple[str, object]]
) -> list[Finding]:
    findings = []
    for name, engine in engines:
        pool = type(engine.sync_engine.pool).__name__
        if pool == "NullPool":
            continue
        bound = [
            sm_name for sm_name, sm in sessionmakers if getattr(sm, "kw", {}).get("bind") is engine
        ]
        covered = (
            f" pgharness rebinds {', '.join(f'`{b}`' for b in bound)}, so sessions from"
            " it are safe; any other use of this engine (engine.connect()/begin(), another"
            " sessionmaker, startup code) across test loops fails."
            if bound
            else " It is not bound to a configured sessionmaker, so pgharness does not rebind"
            " anything that uses it."
        )
        findings.append(
            Finding(
                "pooled-engine",
                f"engine `{name}` is created at import time with pool {pool}: its pooled"
                " connections belong to the loop that opened them, and a test on another loop"
                " fails with 'attached to a different loop' / 'another operation is in"
                f" progress'.{covered}",
                "create the engine inside the app's lifespan or a factory; or use"
                " `poolclass=NullPool` for tests; or `await engine.dispose()` before another"
                " loop uses it; name every sessionmaker the app uses in pgharness_sessionmakers.",
            )
        )
    return findings


def _unconfigured_sessionmakers(
    modules: list[Any], configured: list[tuple[str, object]]
) -> list[Finding]:
    """Sessionmakers of the project that ``pgharness_sessionmakers`` leaves out: the app's
    sessions from them would reach its own database (pgharness stops such connections)."""
    found = _globals_of_type(modules, "async_sessionmaker") + _globals_of_type(
        modules, "sessionmaker"
    )
    missing = [name for name, maker in found if all(maker is not known for _, known in configured)]
    if not missing:
        return []
    wanted = [*(name for name, _ in configured), *missing]
    listed = ", ".join(f'"{name}"' for name in wanted)
    return [
        Finding(
            "unconfigured-sessionmaker",
            f"{', '.join(f'`{m}`' for m in missing)} is not named in pgharness_sessionmakers: "
            "sessions from it are not rebound to the test's transaction, so the app's writes "
            "through it would go to the database of its own settings (pgharness stops those "
            "connections with UnmanagedDatabaseError).",
            f"pgharness_sessionmakers = [{listed}] in [tool.pytest.ini_options].",
        )
    ]


# -- finding things -----------------------------------------------------------------------------


def _project_modules(rootdir: Path) -> Iterator[Any]:
    root = rootdir.resolve()
    for module in list(sys.modules.values()):
        if not isinstance(module, types.ModuleType):
            continue  # sys.modules may hold any object; only modules are read
        filename = module.__dict__.get("__file__")
        if not filename or "site-packages" in filename:
            continue
        try:
            Path(filename).resolve().relative_to(root)
        except ValueError:
            continue
        if any(part in _SKIPPED_DIRS for part in Path(filename).parts):
            continue
        yield module


def _globals_of_type(modules: list[Any], type_name: str) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for module in modules:
        for attr, value in list(vars(module).items()):
            if type(value).__name__ == type_name and all(value is not v for _, v in found):
                found.append((f"{module.__name__}:{attr}", value))
    return found


def _conftest_files(rootdir: Path) -> Iterator[Path]:
    for directory, subdirs, files in os.walk(rootdir):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        if "conftest.py" in files:
            yield Path(directory) / "conftest.py"


def _async_fixtures(conftests: list[Path]) -> Iterator[tuple[Path, int, str, str, str | None]]:
    """(path, line, name, scope, loop_scope) of each async fixture defined in a conftest."""
    for path in conftests:
        tree = _parse(path)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.AsyncFunctionDef):
                continue
            for decorator in node.decorator_list:
                if "fixture" not in ast.unparse(decorator):
                    continue
                keywords = decorator.keywords if isinstance(decorator, ast.Call) else []
                values = {
                    k.arg: k.value.value
                    for k in keywords
                    if isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)
                }
                yield (
                    path,
                    node.lineno,
                    node.name,
                    values.get("scope", "function"),
                    values.get("loop_scope"),
                )


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _format_version(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def _relative(path: Path, rootdir: Path) -> str:
    try:
        return str(path.resolve().relative_to(rootdir.resolve()))
    except ValueError:
        return str(path)
