"""The doctor's look for code that connects on its own: a lifespan (or startup hook) that
opens its own pool or engine, and module globals that connect at import.

Those connections go to the database of the app's settings, not the test's: pgharness stops
them with ``UnmanagedDatabaseError``. Read from the source, nothing is run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

from ._doctor_project import parse, relative
from ._finding import Finding

__all__ = ["connects_on_its_own"]

#: Calls that open a connection or a pool of them, by their last one or two name parts.
_CONNECTING = frozenset(
    {
        "asyncpg.connect",
        "asyncpg.create_pool",
        "create_pool",
        "psycopg.connect",
        "psycopg2.connect",
        "AsyncConnection.connect",
        "Connection.connect",
        "ConnectionPool",
        "AsyncConnectionPool",
    }
)
#: Engines made in a lifespan are the app's own: sessions and connections from them are not
#: the ones pgharness rebinds.
_ENGINE_FACTORIES = frozenset({"create_engine", "create_async_engine"})

_LIFESPAN_FIX = (
    "open the database through the sessionmaker pgharness rebinds (named in"
    " pgharness_sessionmakers) instead of a pool or engine of the lifespan's own;\n"
    "or skip the lifespan in tests with pgharness_lifespan = off (what it sets up is then"
    " missing in tests);\n"
    "or, if it reaches an external database on purpose, list that URL in pgharness_allow_urls."
)
_GLOBAL_FIX = (
    "connect when the app starts or on first use (in the lifespan, or a function the code"
    " calls), not at import: a connection made at import goes to the database of the app's"
    " settings before any test can redirect it."
)


def connects_on_its_own(files: Iterable[Path], rootdir: Path, *, lifespan: bool) -> list[Finding]:
    """``lifespan``: whether the clients run the app's lifespan (``pgharness_lifespan``)."""
    findings: list[Finding] = []
    for path in files:
        tree = parse(path)
        if tree is None:
            continue
        where = relative(path, rootdir)
        for call in _module_level_calls(tree):
            if _called_name(call) in _CONNECTING or _tail(call) in _CONNECTING:
                findings.append(
                    Finding(
                        "connects-at-import",
                        f"module-level `{_short(call)}` connects while the module is imported.",
                        _GLOBAL_FIX,
                        where=f"{where}:{call.lineno}",
                    )
                )
        if not lifespan:
            continue
        for function in _lifespans(tree):
            for call in _calls_in(function):
                name, tail = _called_name(call), _tail(call)
                if name in _CONNECTING or tail in _CONNECTING or name in _ENGINE_FACTORIES:
                    findings.append(
                        Finding(
                            "lifespan-connects",
                            f"`{function.name}`, run when the app starts, opens its own"
                            f" connections (`{_short(call)}`): in client and async_client they"
                            " would go to the database of the app's settings, not the test's.",
                            _LIFESPAN_FIX,
                            where=f"{where}:{call.lineno}",
                        )
                    )
    return findings


def _module_level_calls(tree: ast.Module) -> Iterator[ast.Call]:
    """Calls that run at import: outside every function, class body included."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            yield node
        pending.extend(ast.iter_child_nodes(node))


def _lifespans(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Functions passed as ``lifespan=``, named like one, or registered for startup."""
    passed = {
        keyword.value.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "lifespan" and isinstance(keyword.value, ast.Name)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (
            node.name in passed
            or "lifespan" in node.name
            or any("startup" in ast.unparse(d) for d in node.decorator_list)
        )
    ]


def _calls_in(function: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            yield node


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _tail(call: ast.Call) -> str:
    """The last two parts of the called name (``asyncpg.connect``)."""
    return ".".join(ast.unparse(call.func).split(".")[-2:])


def _short(call: ast.Call) -> str:
    return f"{ast.unparse(call.func)}(...)"
