"""Each source parsed once per process for pytest's tracebacks.

To show the statement around a frame's line, pytest parses the frame's whole module, again for
each traceback it prints. This suite's inner runs fail on purpose, many times in one process,
through the same SQLAlchemy modules: their parses were a tenth of the suite's CPU. Kept here,
keyed by the source text itself, a parse is reused only for the same text, so what pytest
prints does not change.
"""

from __future__ import annotations

import ast
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
