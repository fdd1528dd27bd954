"""The blocker: while pgharness is active, no connection reaches a database it did not create.

(Work in progress: the interface other modules use.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["template_build"]


@contextlib.contextmanager
def template_build(label: str, alembic_env: Path | None = None) -> Iterator[None]:
    """Mark the template build: a blocked connection's message then names the build and, for an
    Alembic ``env.py`` (``alembic_env``), the two-line change that hands it pgharness's
    connection."""
    yield
