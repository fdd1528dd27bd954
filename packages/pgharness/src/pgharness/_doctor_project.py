"""Finding the project's code for the doctor: its imported modules and their globals, its
source files, conftest files and test files. Nothing here imports or runs project code."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import os
import sys
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "async_fixtures",
    "conftest_files",
    "globals_of_type",
    "parse",
    "project_modules",
    "relative",
    "source_of_module",
    "test_files",
]

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


def project_modules(rootdir: Path) -> Iterator[types.ModuleType]:
    """Imported modules whose file lies in the project (not in a virtualenv under it)."""
    for module in list(sys.modules.values()):
        if not isinstance(module, types.ModuleType):
            continue  # sys.modules may hold any object; only modules are read
        filename = module.__dict__.get("__file__")
        if filename and _in_project(Path(filename), rootdir):
            yield module


def source_of_module(name: str, rootdir: Path) -> Path | None:
    """The project file of module ``name``, found without importing it (an import that failed
    still has a file to read)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec is not None else None
    if not origin or not origin.endswith(".py") or not _in_project(Path(origin), rootdir):
        return None
    return Path(origin)


def _in_project(path: Path, rootdir: Path) -> bool:
    if "site-packages" in str(path) or any(part in _SKIPPED_DIRS for part in path.parts):
        return False
    try:
        path.resolve().relative_to(rootdir.resolve())
    except ValueError:
        return False
    return True


def globals_of_type(modules: Iterable[types.ModuleType], type_name: str) -> list[tuple[str, Any]]:
    """``(module:attr, value)`` of every module global whose type is named ``type_name``
    (each object once, under the first name it was found by)."""
    found: list[tuple[str, Any]] = []
    for module in modules:
        for attr, value in list(vars(module).items()):
            if type(value).__name__ == type_name and all(value is not v for _, v in found):
                found.append((f"{module.__name__}:{attr}", value))
    return found


def _walk(rootdir: Path) -> Iterator[tuple[Path, list[str]]]:
    for directory, subdirs, files in os.walk(rootdir):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        yield Path(directory), sorted(files)


def conftest_files(rootdir: Path) -> Iterator[Path]:
    for directory, files in _walk(rootdir):
        if "conftest.py" in files:
            yield directory / "conftest.py"


def test_files(rootdir: Path, testpaths: list[str], patterns: list[str]) -> Iterator[Path]:
    """The files pytest would collect tests from (``testpaths``, ``python_files``)."""
    roots = [rootdir / path for path in testpaths] or [rootdir]
    seen: set[Path] = set()
    for root in roots:
        for directory, files in _walk(root):
            for name in files:
                path = directory / name
                if path not in seen and any(fnmatch.fnmatch(name, p) for p in patterns):
                    seen.add(path)
                    yield path


def async_fixtures(conftests: list[Path]) -> Iterator[tuple[Path, int, str, str, str | None]]:
    """(path, line, name, scope, loop_scope) of each async fixture defined in a conftest."""
    for path in conftests:
        tree = parse(path)
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


def parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def relative(path: Path, rootdir: Path) -> str:
    try:
        return str(path.resolve().relative_to(rootdir.resolve()))
    except ValueError:
        return str(path)


def where_defined(reference: str, rootdir: Path) -> str | None:
    """``file:line`` of the module-level assignment or definition named by ``module:attr``."""
    module_name, _, attr = reference.partition(":")
    path = source_of_module(module_name, rootdir)
    tree = parse(path) if path is not None else None
    if path is None or tree is None:
        return None
    name = attr.split(".", 1)[0]
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            targets = [ast.Name(id=node.name)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return f"{relative(path, rootdir)}:{node.lineno}"
    return relative(path, rootdir)


def ini_location(inipath: Path | None, rootdir: Path, key: str) -> str | None:
    """``file:line`` where the ini file sets ``key`` (``file`` alone when it does not)."""
    if inipath is None:
        return None
    # pytest has just read this file: it exists and decodes.
    lines = inipath.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        name = line.split("=", 1)[0].strip()
        if name == key:
            return f"{relative(inipath, rootdir)}:{number}"
    return relative(inipath, rootdir)
