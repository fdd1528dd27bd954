"""Each source parsed once per process for pytest's tracebacks.

To show the statement around a frame's line, pytest parses the frame's whole module, again for
each traceback it prints. This suite's inner runs fail on purpose, many times in one process,
through the same SQLAlchemy modules: their parses were a tenth of the suite's CPU. Kept here,
keyed by the source text itself, a parse is reused only for the same text, so what pytest
prints does not change.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import Any

import _pytest._code.code as pytest_code

_parsed: dict[str, ast.AST] = {}


def keep_parses() -> None:
    """From now on, ``getstatementrange_ast`` parses each distinct source once."""
    original = pytest_code.getstatementrange_ast

    def getstatementrange_ast(
        lineno: int, source: Any, assertion: bool = False, astnode: ast.AST | None = None
    ) -> Any:
        if astnode is None:
            text = str(source)
            astnode = _parsed.get(text)
            result = original(lineno, source, assertion, astnode)
            if astnode is None:
                _parsed[text] = result[0]
            return result
        return original(lineno, source, assertion, astnode)

    pytest_code.getstatementrange_ast = getstatementrange_ast


def parse_ahead(module_names: Iterable[str]) -> None:
    """Parse the sources of ``module_names`` now, keyed as pytest will ask for them: for a fork
    server, whose children would each parse them again for their first traceback."""
    import importlib
    import warnings

    from _pytest._code.source import findsource

    for name in module_names:
        source, _ = findsource(importlib.import_module(name))
        if source is None:
            continue
        text = str(source)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as pytest parses: no warnings of the source's own
            _parsed.setdefault(text, ast.parse(text, "source", "exec"))
