"""The doctor's look at Alembic's ``env.py``: does it migrate the database pgharness hands it?

pgharness builds the template by running ``upgrade head`` with an open connection in
``config.attributes["connection"]`` and ``sqlalchemy.url`` set to the template database. An
``env.py`` that uses neither (it builds its engine from the app's settings, or overwrites
``sqlalchemy.url``) migrates another database: the build is stopped at connect time. Read
from the source, nothing is run.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ._config import AlembicSchema
from ._doctor_project import parse, relative
from ._errors import ConfigurationError
from ._finding import Finding
from ._openers import ALEMBIC_ENV_FIX
from ._template import alembic_script_dir

__all__ = ["env_py_migrates_elsewhere"]

_ENGINE_FACTORIES = frozenset({"create_engine", "create_async_engine"})


def env_py_migrates_elsewhere(schema: AlembicSchema, rootdir: Path) -> list[Finding]:
    try:
        env_py = alembic_script_dir(schema, rootdir) / "env.py"
    except ConfigurationError as exc:
        text = str(exc)
        what, _, fix = text.partition(" Fix: ")
        return [Finding("settings", what, fix or "correct pgharness_schema.")]
    tree = parse(env_py)
    if tree is None or _uses_given_connection(tree):
        return []
    where = relative(env_py, rootdir)
    override = _url_override(tree)
    if override is not None:
        why = (
            f"it replaces the sqlalchemy.url pgharness sets with its own"
            f" (`{ast.unparse(override)}`)"
        )
        line = override.lineno
    else:
        engine = _own_engine(tree)
        if engine is None or _reads_given_url(tree):
            return []
        why = f"it makes its engine from a URL of its own (`{ast.unparse(engine)}`)"
        line = engine.lineno
    return [
        Finding(
            "alembic-env",
            f"env.py would migrate another database than the one pgharness builds the template"
            f" in: {why}, and it does not use the connection pgharness passes in"
            ' config.attributes["connection"]. The build would be stopped with'
            " UnmanagedDatabaseError.",
            ALEMBIC_ENV_FIX.rstrip(),
            where=f"{where}:{line}",
        )
    ]


def _uses_given_connection(tree: ast.Module) -> bool:
    """``config.attributes.get("connection")`` or ``config.attributes["connection"]``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            owner, key = node.value, node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            owner, key = node.func.value, node.args[0]
        else:
            continue
        if (
            isinstance(owner, ast.Attribute)
            and owner.attr == "attributes"
            and isinstance(key, ast.Constant)
            and key.value == "connection"
        ):
            return True
    return False


def _calls(tree: ast.Module, method: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == method)
            or (isinstance(node.func, ast.Name) and node.func.id == method)
        )
    ]


def _names_url(call: ast.Call) -> bool:
    return bool(call.args) and ast.unparse(call.args[0]) in ("'sqlalchemy.url'", '"sqlalchemy.url"')


def _url_override(tree: ast.Module) -> ast.Call | None:
    return next((c for c in _calls(tree, "set_main_option") if _names_url(c)), None)


def _reads_given_url(tree: ast.Module) -> bool:
    return (
        any(_names_url(c) for c in _calls(tree, "get_main_option"))
        or bool(_calls(tree, "engine_from_config"))
        or bool(_calls(tree, "async_engine_from_config"))
    )


def _own_engine(tree: ast.Module) -> ast.Call | None:
    for factory in sorted(_ENGINE_FACTORIES):
        calls = _calls(tree, factory)
        if calls:
            return calls[0]
    return None
