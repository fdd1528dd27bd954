"""Reading a failed test's exception: the chain of causes and the frames it passed through.

The diagnostics only ever read what the exception already carries (its traceback frames
and their locals), so a passing test never reaches this module. Frames hold arbitrary
objects: the diagnostics compare them by identity and by their real type (``is_instance``),
and read attributes only of the libraries' own objects (``library_attribute``), so that a
global or a local that answers every attribute (``ctypes.cdll``, a mock, a proxy) runs none of
its code.
"""

from __future__ import annotations

import contextlib
import linecache
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TypeGuard, TypeVar

T = TypeVar("T")

__all__ = [
    "Frame",
    "frames_of",
    "is_instance",
    "is_library_frame",
    "iter_exceptions",
    "library_attribute",
    "message_of",
    "raised_by",
    "running_under",
    "user_frame",
]

# Packages whose frames are machinery between the user's code and the database: the
# "line of user code" is the innermost frame outside them.
_LIBRARY_PACKAGES = frozenset(
    {
        "_pytest",
        "anyio",
        "asyncio",
        "asyncpg",
        "concurrent",
        "contextlib",
        "fastapi",
        "functools",
        "greenlet",
        "httpcore",
        "httpx",
        "pgharness",
        "pluggy",
        "psycopg",
        "pydantic",
        "pydantic_core",
        "pytest",
        "pytest_asyncio",
        "sqlalchemy",
        "starlette",
        "threading",
    }
)
_STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


@dataclass(frozen=True)
class Frame:
    """One traceback entry: the live frame and the line it was at."""

    frame: FrameType
    lineno: int

    @property
    def module(self) -> str:
        name = self.frame.f_globals.get("__name__", "")
        return name if isinstance(name, str) else ""

    @property
    def function(self) -> str:
        return self.frame.f_code.co_name

    @property
    def filename(self) -> str:
        return self.frame.f_code.co_filename

    @property
    def source_line(self) -> str:
        return linecache.getline(self.filename, self.lineno).strip()

    def local(self, name: str) -> object | None:
        return self.frame.f_locals.get(name)

    def where(self, rootdir: Path | None = None) -> str:
        path = Path(self.filename)
        if rootdir is not None:
            with contextlib.suppress(ValueError):
                path = path.resolve().relative_to(rootdir.resolve())
        return f"{path}:{self.lineno}"


def iter_exceptions(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and the members of exception groups.

    Exceptions raised inside an app reach the test re-raised or wrapped (Starlette and
    anyio wrap them in groups); the interesting one may be anywhere in that tree.
    """
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
        if current.__context__ is not None:
            pending.append(current.__context__)


def frames_of(tb: TracebackType | None) -> list[Frame]:
    """The traceback's frames, outermost first."""
    frames: list[Frame] = []
    while tb is not None:
        frames.append(Frame(tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return frames


def is_library_frame(frame: Frame) -> bool:
    top_package = frame.module.split(".", 1)[0]
    if top_package in _LIBRARY_PACKAGES or frame.filename.startswith("<"):
        return True
    path = Path(frame.filename)
    if "site-packages" in path.parts or "dist-packages" in path.parts:
        return True  # installed libraries; the user's code is their project's files
    try:
        path.resolve().relative_to(_STDLIB)
    except ValueError:
        return False
    return True


def user_frame(frames: list[Frame]) -> Frame | None:
    """The innermost frame that belongs to the user's code (test, service or app)."""
    for frame in reversed(frames):
        if not is_library_frame(frame):
            return frame
    return None


def is_instance(value: object, cls: type[T]) -> TypeGuard[T]:
    """``isinstance`` decided by the object's real type, running none of the object's code.

    Plain ``isinstance`` falls back to ``value.__class__``, which a proxy or a mock answers as
    it likes (or by raising).
    """
    return issubclass(type(value), cls)


def library_attribute(obj: object, name: str, packages: frozenset[str]) -> object | None:
    """``obj.<name>`` when ``obj``'s class belongs to one of ``packages``; ``None`` otherwise.

    The diagnostics read attributes of the driver's and SQLAlchemy's own objects only: any
    other object may answer every attribute (``ctypes.cdll`` then loads a shared library, a
    mock grows a child) or raise anything.
    """
    if type(obj).__module__.split(".", 1)[0] not in packages:
        return None
    try:
        return getattr(obj, name, None)
    except Exception:  # a library property that fails on a half-closed object explains nothing
        return None


def message_of(exc: BaseException) -> str:
    """``str(exc)``, or ``""`` for an exception whose ``__str__`` itself fails."""
    try:
        return str(exc)
    except Exception:
        return ""


def raised_by(exc: BaseException, packages: frozenset[str]) -> bool:
    """Whether ``exc`` is an exception class of one of ``packages`` (or a subclass of one).

    Diagnostics match error texts only on the types that really carry them: a test's own
    ``pytest.fail(...)`` or ``AssertionError`` that quotes such a text explains nothing.
    """
    return any(cls.__module__.split(".", 1)[0] in packages for cls in type(exc).__mro__)


def running_under(frames: list[Frame], packages: set[str]) -> bool:
    return any(frame.module.split(".", 1)[0] in packages for frame in frames)
