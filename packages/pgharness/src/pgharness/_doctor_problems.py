"""The doctor's problems about the project's Python: sessionmakers the settings leave out,
and async tests no plugin runs. Each is a ``Finding`` of severity ``PROBLEM``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ._doctor_project import parse, relative, test_files, where_defined
from ._finding import Finding
from ._loops import asyncio_mode
from ._unmarked import fix_for, named_tests, why_unrun

__all__ = ["unconfigured_sessionmakers", "unmarked_async_tests"]

_RUNNER_MARKS = ("mark.asyncio", "mark.anyio")


def unconfigured_sessionmakers(
    found: list[tuple[str, object]], configured: list[tuple[str, object]], rootdir: Path
) -> list[Finding]:
    """Sessionmakers of the app that ``pgharness_sessionmakers`` leaves out: its sessions from
    them would reach the database of its own settings (pgharness stops such connections)."""
    findings = []
    for name, maker in found:
        wanted = [*(known for known, _ in configured), name]
        listed = ", ".join(f'"{known}"' for known in wanted)
        kind = type(maker).__name__
        findings.append(
            Finding(
                "unconfigured-sessionmaker",
                f"the app has the {kind} `{name}`, which pgharness_sessionmakers does not name:"
                " its sessions are not rebound to each test's transaction, so they would open"
                " connections to the database of the app's own settings (pgharness stops them"
                " with UnmanagedDatabaseError).",
                f"pgharness_sessionmakers = [{listed}] in [tool.pytest.ini_options].",
                where=where_defined(name, rootdir),
            )
        )
    return findings


def unmarked_async_tests(config: pytest.Config) -> list[Finding]:
    mode = asyncio_mode(config)
    if mode == "auto":
        return []
    rootdir = config.rootpath
    patterns = [str(p) for p in config.getini("python_files") or ["test_*.py", "*_test.py"]]
    testpaths = [str(p) for p in config.getini("testpaths") or []]
    unmarked: list[str] = []
    for path in test_files(rootdir, testpaths, patterns):
        tree = parse(path)
        if tree is not None:
            unmarked += [
                f"{relative(path, rootdir)}:{line} {name}" for line, name in _unmarked_in(tree)
            ]
    if not unmarked:
        return []
    count = len(unmarked)
    listed = "\n".join(named_tests(unmarked))
    return [
        Finding(
            "unmarked-async-tests",
            f"{count} async test{'s' if count != 1 else ''} would not run: {why_unrun(mode)},"
            f" and {'they are' if count != 1 else 'it is'} not marked:\n{listed}",
            fix_for(mode),
            where=unmarked[0].split(" ", 1)[0],
        )
    ]


def _unmarked_in(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, name) of the async tests in a module that carry no runner mark, on themselves,
    their class or the module (``pytestmark``)."""
    if _marks_body(tree.body):
        return []
    found: list[tuple[int, str]] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            if _marked(node.decorator_list) or _marks_body(node.body):
                continue
            found += [
                (item.lineno, f"{node.name}.{item.name}")
                for item in node.body
                if isinstance(item, ast.AsyncFunctionDef) and _is_unmarked_test(item)
            ]
        elif isinstance(node, ast.AsyncFunctionDef) and _is_unmarked_test(node):
            found.append((node.lineno, node.name))
    return found


def _is_unmarked_test(node: ast.AsyncFunctionDef) -> bool:
    return node.name.startswith("test") and not _marked(node.decorator_list)


def _marked(decorators: list[ast.expr]) -> bool:
    return any(mark in ast.unparse(d) for d in decorators for mark in _RUNNER_MARKS)


def _marks_body(body: list[ast.stmt]) -> bool:
    """Whether a module or class body sets ``pytestmark`` to a runner mark."""
    for node in body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return any(mark in ast.unparse(node.value) for mark in _RUNNER_MARKS)
    return False
