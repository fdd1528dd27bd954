"""The doctor's advice: set-ups that often lead to failing async tests, but need not.

Each check returns ``Finding``s of severity ``ADVICE``: the doctor prints them under their own
heading and they do not change its exit status.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

from ._doctor_project import (
    async_fixtures,
    ini_location,
    parse,
    relative,
    where_defined,
)
from ._finding import Finding, Severity
from ._loops import fixture_loop_scope, is_wider, loop_settings, pytest_asyncio_version

__all__ = [
    "event_loop_fixtures",
    "expire_on_commit",
    "lazy_relationships",
    "loop_scopes",
    "mappers",
    "pooled_engines",
]

_MAX_LISTED = 15
_ADVICE = Severity.ADVICE


def lazy_relationships(schema: object | None, rootdir: Path) -> list[Finding]:
    lazy: list[tuple[str, type]] = []
    for mapper in mappers(schema):
        for relationship in mapper.relationships:
            if relationship.lazy in ("select", True):
                lazy.append((f"{mapper.class_.__name__}.{relationship.key}", mapper.class_))
    if not lazy:
        return []
    lazy.sort()
    names = [name for name, _ in lazy]
    shown = ", ".join(names[:_MAX_LISTED]) + (" ..." if len(names) > _MAX_LISTED else "")
    return [
        Finding(
            "lazy-loading",
            f'{len(lazy)} relationship(s) use the default lazy loading (lazy="select") in a'
            f" project that uses AsyncSession: {shown}. Reading one that the query did not load"
            " is implicit IO and fails with MissingGreenlet.",
            "load what you read in the query: `.options(selectinload(Model.collection))` for a"
            " collection, `.options(joinedload(Model.parent))` for a many-to-one;\n"
            'or set `lazy="raise"` on the relationship so an unloaded read fails clearly'
            ' (or `lazy="selectin"` to always load it);\n'
            "or read it with `await obj.awaitable_attrs.rel` (Base with `AsyncAttrs`).",
            where=_class_location(lazy[0][1], rootdir),
            severity=_ADVICE,
        )
    ]


def _class_location(cls: type, rootdir: Path) -> str | None:
    try:
        path = inspect.getsourcefile(cls)
        _, line = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return None
    return f"{relative(Path(path), rootdir)}:{line}" if path else None


def mappers(schema: object | None) -> list[Any]:
    """The project's mapped classes: the schema's registry first, then every other one."""
    registries: list[Any] = []
    own_registry = getattr(schema, "registry", None)
    if own_registry is not None:
        registries.append(own_registry)
    try:
        mapper_module: Any = importlib.import_module("sqlalchemy.orm.mapper")
        registries += [r for r in list(mapper_module._mapper_registries) if r not in registries]
    except (ImportError, AttributeError):
        pass
    found: list[Any] = []
    for registry in registries:
        for mapper in sorted(registry.mappers, key=lambda m: m.class_.__name__):
            if mapper not in found and not _is_library_class(mapper.class_):
                found.append(mapper)
    return found


def _is_library_class(cls: type) -> bool:
    return cls.__module__.split(".", 1)[0] in {"sqlalchemy", "pgharness", "alembic"}


def expire_on_commit(sessionmakers: list[tuple[str, object]], rootdir: Path) -> list[Finding]:
    findings = []
    for name, sessionmaker in sessionmakers:
        if type(sessionmaker).__name__ != "async_sessionmaker":
            continue
        options: dict[str, Any] = getattr(sessionmaker, "kw", {})
        if options.get("expire_on_commit", True):
            findings.append(
                Finding(
                    "expire-on-commit",
                    f"async sessionmaker `{name}` leaves expire_on_commit at SQLAlchemy's"
                    " default (True): every commit() expires the loaded objects, and the next"
                    " attribute read (in a service after commit, or in the route that returns"
                    " the object) is implicit IO: MissingGreenlet.",
                    "`async_sessionmaker(engine, expire_on_commit=False)`;\n"
                    "where fresh values are intended after a commit, `await session.refresh(obj)`.",
                    where=where_defined(name, rootdir),
                    severity=_ADVICE,
                )
            )
    return findings


def loop_scopes(config: pytest.Config, conftests: list[Path]) -> list[Finding]:
    settings = loop_settings(config)
    if settings is None:  # pytest-asyncio is not installed
        return []
    rootdir = config.rootpath
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
                " different loop'). pgharness's own fixtures open on each test's loop.",
                f"set both to the same scope in [tool.pytest.ini_options], e.g."
                f' asyncio_default_test_loop_scope = "{fixture_default}", or'
                f' asyncio_default_fixture_loop_scope = "{test_scope}".',
                where=ini_location(config.inipath, rootdir, "asyncio_default_fixture_loop_scope"),
                severity=_ADVICE,
            )
        )
    for path, lineno, name, scope, loop_scope in async_fixtures(conftests):
        effective = fixture_loop_scope(loop_scope, scope, settings.fixture_scope_setting)
        if is_wider(effective, test_scope):
            findings.append(
                Finding(
                    "loop-scope",
                    f'async fixture `{name}` (scope="{scope}") runs on a {effective}-scoped loop'
                    f" while tests run on {test_scope}-scoped loops: connections, sessions or"
                    " pooled engines it creates cannot be used by the tests.",
                    "run the tests on the same loop"
                    f' (`@pytest.mark.asyncio(loop_scope="{effective}")` or'
                    f' asyncio_default_test_loop_scope = "{effective}"), or make the fixture'
                    " function-scoped; with pgharness, use `async_db` / `async_client`, which open"
                    " the connection on each test's loop.",
                    where=f"{relative(path, rootdir)}:{lineno}",
                    severity=_ADVICE,
                )
            )
    return findings


def event_loop_fixtures(conftests: list[Path], rootdir: Path) -> list[Finding]:
    version = pytest_asyncio_version()
    findings = []
    for path in conftests:
        tree = parse(path)
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
                        "an `event_loop` fixture is defined;"
                        f" pytest-asyncio {_format_version(version)} {ignored}: tests still run on"
                        " their own loops, so a session-scoped loop meant to share connections"
                        " does not exist.",
                        "delete it; choose loops with `loop_scope` instead"
                        ' (`@pytest.mark.asyncio(loop_scope="session")`,'
                        ' `@pytest_asyncio.fixture(loop_scope="session")`, or the'
                        " asyncio_default_*_loop_scope ini keys).",
                        where=f"{relative(path, rootdir)}:{node.lineno}",
                        severity=_ADVICE,
                    )
                )
    return findings


def pooled_engines(
    engines: list[tuple[str, Any]], configured: list[tuple[str, object]], rootdir: Path
) -> list[Finding]:
    findings = []
    for name, engine in engines:
        pool = type(engine.sync_engine.pool).__name__
        if pool == "NullPool":
            continue
        bound = [
            sm_name for sm_name, sm in configured if getattr(sm, "kw", {}).get("bind") is engine
        ]
        covered = (
            f" In tests pgharness rebinds {', '.join(f'`{b}`' for b in bound)}, so sessions from"
            " it are safe; other uses of this engine (engine.connect()/begin(), startup code)"
            " on several loops are not."
            if bound
            else ""
        )
        findings.append(
            Finding(
                "engine-at-import",
                f"engine `{name}` is created at import time with pool {pool}: its pooled"
                " connections belong to the loop that opened them, and code that uses it on"
                " another loop fails with 'attached to a different loop' / 'another operation"
                f" is in progress'.{covered}",
                "create the engine inside the app's lifespan or a factory; or use"
                " `poolclass=NullPool` for tests; or `await engine.dispose()` before another"
                " loop uses it.",
                where=where_defined(name, rootdir),
                severity=_ADVICE,
            )
        )
    return findings


def _format_version(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)
