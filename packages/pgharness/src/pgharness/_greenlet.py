"""Explaining ``MissingGreenlet``: which ORM attribute did IO, why, and what fixes it.

In async SQLAlchemy an attribute read that needs the database (a lazy relationship, an
attribute expired by ``commit()``, a deferred column) cannot ``await``, so it fails with
``greenlet_spawn has not been called``. The attribute machinery's frames still hold the
attribute and the instance state, which tell us the attribute and the kind of load.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._tracebacks import (
    Frame,
    frames_of,
    is_instance,
    library_attribute,
    message_of,
    raised_by,
    running_under,
    user_frame,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import InstanceState, Session

__all__ = ["explain_missing_greenlet", "is_missing_greenlet"]


def is_missing_greenlet(exc: BaseException) -> bool:
    if not raised_by(exc, _SQLALCHEMY):
        return False  # a test's own failure that merely quotes the text
    # 2.0 says "can't call await_only() here", 2.1 "can't call await_() here".
    if type(exc).__name__ == "MissingGreenlet":
        return True
    return "greenlet_spawn has not been called" in message_of(exc)


_SQLALCHEMY = frozenset({"sqlalchemy"})


class LoadKind(Enum):
    LAZY = "lazy"
    EXPIRED = "expired"
    DEFERRED = "deferred"


@dataclass(frozen=True)
class AttributeLoad:
    owner: str
    key: str
    kind: LoadKind
    expire_on_commit: bool | None
    expiring_listener: str | None
    has_awaitable_attrs: bool
    instance: object | None
    #: For a relationship: whether it holds a collection (None: not a relationship).
    collection: bool | None = None

    @property
    def loader(self) -> str:
        """The eager loader that fits the relationship: one more SELECT for a collection, a
        JOIN for a single related object."""
        return "selectinload" if self.collection is not False else "joinedload"


def explain_missing_greenlet(
    exc: BaseException,
    rootdir: Path | None,
    test_path: Path | None = None,
    *,
    sync_test: bool = False,
) -> str:
    """The attribute, why it needed IO, where it was read, and the fixes.

    ``sync_test``: the failing test is a ``def`` test, which can only take fixes without
    ``await`` when the read happened in its own code (not inside the app).
    """
    frames = frames_of(exc.__traceback__)
    load = _attribute_load(frames)
    user = user_frame(frames)
    lines: list[str] = []
    if load is None:
        lines.append(
            "SQLAlchemy needed to do database IO in a plain (non-awaited) call, so it could"
            " not run it on the event loop."
        )
        if user is not None:
            lines.append(f"The call came from {user.where(rootdir)}:  {user.source_line}")
        lines += [
            "",
            "How to fix it:",
            "  - call the awaitable API: `await session.execute(...)`, `await session.get(...)`,"
            " `await session.refresh(obj)`, `await conn.run_sync(fn)` for sync helpers;",
            "  - attribute reads that need the database: load them in the query"
            " (`selectinload(...)`) or `await obj.awaitable_attrs.<name>`.",
        ]
        return "\n".join(lines)

    attribute = f"{load.owner}.{load.key}"
    lines.append(f"Reading `{attribute}` needed a database query: {_why(load, attribute)}")
    lines.append(
        "In async code an attribute read cannot `await`, so SQLAlchemy raised MissingGreenlet."
    )
    if user is not None:
        lines.append(f"The read happened at {user.where(rootdir)}:  {user.source_line}")
        test_frame = _test_frame(frames, test_path)
        if test_frame is not None and test_frame is not user:
            lines.append(f"(reached from {test_frame.where(rootdir)}:  {test_frame.source_line})")
    in_app = running_under(frames, {"starlette", "fastapi"})
    if in_app:
        accessor = _accessor(frames)
        if accessor is not None and accessor.module.split(".", 1)[0] in {"fastapi", "pydantic"}:
            lines.append(
                "It happened inside the app, while FastAPI serialized the response"
                " (response_model reads every field of the returned object)."
            )
        else:
            lines.append("It happened inside the app, while handling the request.")
    variable = _variable_name(user, load)
    read_in_sync_code = user is not None and not user.frame.f_code.co_flags & inspect.CO_COROUTINE
    fixes = _sync_fixes if sync_test and not in_app and read_in_sync_code else _fixes
    lines += ["", "How to fix it:", *fixes(load, attribute, variable)]
    return "\n".join(lines)


def _why(load: AttributeLoad, attribute: str) -> str:
    if load.kind is LoadKind.LAZY:
        return (
            f'`{attribute}` is a relationship with the default lazy loading (lazy="select"),'
            " and it was not loaded by the query that fetched the object."
        )
    if load.kind is LoadKind.DEFERRED:
        return f"`{attribute}` is a deferred column, not loaded by the query."
    if load.expiring_listener is not None:
        return (
            f"the object's attributes were expired by the session event listener"
            f" `{load.expiring_listener}`, which calls expire_all() (the SQLAlchemy 1.x"
            " savepoint-restart recipe)."
        )
    if load.expire_on_commit:
        return (
            "the object was expired by `commit()`: the session has expire_on_commit=True"
            " (SQLAlchemy's default), so every loaded attribute is discarded at commit and"
            " the next read reloads it."
        )
    if load.expire_on_commit is False:
        return (
            "the object was expired (by `expire()`, `expire_all()`, `refresh()` or `rollback()`)."
        )
    return (
        "the object was expired, most likely by `commit()` (sessions default to"
        " expire_on_commit=True, which discards every loaded attribute at commit) or by"
        " `expire()` / `rollback()`."
    )


def _variable_name(user: Frame | None, load: AttributeLoad) -> str:
    """What the user's code calls the instance (for a fix they can paste)."""
    if user is not None and load.instance is not None:
        for name, value in user.frame.f_locals.items():
            if value is load.instance:
                return name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", load.owner).lower()


def _fixes(load: AttributeLoad, attribute: str, variable: str) -> list[str]:
    awaitable = f"`await {variable}.awaitable_attrs.{load.key}`"
    awaitable += "" if load.has_awaitable_attrs else " (add `AsyncAttrs` to your declarative Base)"
    if load.kind is LoadKind.LAZY:
        return [
            f"  - load it in the query: `.options({load.loader}({attribute}))`;",
            f"  - or load it explicitly where needed: {awaitable};",
            f'  - `relationship(..., lazy="raise")` on {attribute} (or `lazy="selectin"`) to'
            " find every other place that relies on lazy loading.",
        ]
    if load.kind is LoadKind.DEFERRED:
        return [
            f"  - load it in the query: `.options(undefer({attribute}))`;",
            f"  - or load it explicitly where needed: {awaitable};",
            "  - `deferred(..., raiseload=True)` / `raiseload(...)` to find every other place that"
            " reads it unloaded.",
        ]
    if load.expiring_listener is not None:
        return [
            f"  - remove the `{load.expiring_listener}` listener: in SQLAlchemy 2.x join the test's"
            ' transaction with `join_transaction_mode="create_savepoint"` instead (pgharness\'s'
            " isolation does this: use `async_db` / `pgharness_sessionmakers`);",
            "  - or `await session.refresh(obj)` before reading the object again.",
        ]
    return [
        "  - if the code reads objects after commit (usual in async apps), create the"
        " sessionmaker with `async_sessionmaker(engine, expire_on_commit=False)`"
        " (or `AsyncSession(engine, expire_on_commit=False)`);",
        f"  - where fresh values are intended, `await session.refresh({variable})` after the"
        " commit;",
        f"  - or load it explicitly: {awaitable}.",
    ]


def _sync_fixes(load: AttributeLoad, attribute: str, variable: str) -> list[str]:
    """Fixes a ``def`` test can apply with ``db``: no ``await`` anywhere."""
    refresh = f'`db.refresh({variable}, ["{load.key}"])`'
    if load.kind is LoadKind.LAZY:
        return [
            f"  - load it in the query: `db.scalars(select({load.owner})"
            f".options({load.loader}({attribute})))`;",
            f"  - or load it before reading it: {refresh};",
            f'  - `relationship(..., lazy="raise")` on {attribute} (or `lazy="selectin"`) to'
            " find every other place that relies on lazy loading.",
        ]
    if load.kind is LoadKind.DEFERRED:
        return [
            f"  - load it in the query: `db.scalars(select({load.owner})"
            f".options(undefer({attribute})))`;",
            f"  - or load it before reading it: {refresh}.",
        ]
    return [
        f"  - reload it after the commit: `db.refresh({variable})`;",
        "  - or create the sessionmaker with `expire_on_commit=False`, as async apps usually do.",
    ]


def _attribute_load(frames: list[Frame]) -> AttributeLoad | None:
    from sqlalchemy.orm import InstanceState

    access = next(
        (
            frame
            for frame in frames
            if frame.module == "sqlalchemy.orm.attributes" and frame.function in {"__get__", "get"}
        ),
        None,
    )
    if access is None:
        return None
    attribute = access.local("self")
    key = library_attribute(attribute, "key", _SQLALCHEMY)
    if not isinstance(key, str):
        return None
    found_state = _state_of(access)
    state = found_state if is_instance(found_state, InstanceState) else None
    owner_class = library_attribute(state, "class_", _SQLALCHEMY) or library_attribute(
        attribute, "class_", _SQLALCHEMY
    )
    owner = owner_class.__name__ if isinstance(owner_class, type) else "?"
    session = _session_of(state)
    if session is None:
        session = _session_in_frames(frames)
    expire_on_commit = session.expire_on_commit if session is not None else None
    return AttributeLoad(
        owner=owner,
        key=key,
        kind=_load_kind(frames, state, key),
        expire_on_commit=expire_on_commit if isinstance(expire_on_commit, bool) else None,
        expiring_listener=_expiring_listener(session),
        has_awaitable_attrs=isinstance(owner_class, type)
        and _defined_on(owner_class, "awaitable_attrs"),
        instance=_instance_of(access, state),
        collection=_holds_collection(owner_class, key),
    )


def _holds_collection(owner_class: object, key: str) -> bool | None:
    """Whether relationship ``key`` of the mapped class is a collection (``None``: not a
    relationship, or not a mapped class)."""
    from sqlalchemy import inspect as inspect_mapped

    if not isinstance(owner_class, type):
        return None
    mapper: Any = inspect_mapped(owner_class, raiseerr=False)
    relationship = mapper.relationships.get(key) if mapper is not None else None
    return None if relationship is None else bool(relationship.uselist)


def _defined_on(cls: type, name: str) -> bool:
    """Whether the class or a base defines ``name`` (looked up without running any code)."""
    try:
        inspect.getattr_static(cls, name)
    except AttributeError:
        return False
    return True


def _session_of(state: InstanceState[Any] | None) -> Session | None:
    from sqlalchemy.orm import Session

    session = library_attribute(state, "session", _SQLALCHEMY)
    return session if is_instance(session, Session) else None


def _session_in_frames(frames: list[Frame]) -> Session | None:
    """The (sync) session the user's code was working with, when the state has let go of it.

    Locals are compared by their real type only: a test's or an app's local may be any object.
    """
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    for frame in reversed(frames):
        for value in frame.frame.f_locals.values():
            if is_instance(value, AsyncSession):
                return value.sync_session
            if is_instance(value, Session):
                return value
    return None


def _instance_of(access: Frame, state: InstanceState[Any] | None) -> object | None:
    instance = access.local("instance")
    if instance is not None:
        return instance
    if state is None:
        return None
    live: object | None = state.obj()
    return live


def _state_of(access: Frame) -> object | None:
    state = access.local("state")
    if state is not None:
        return state
    instance = access.local("instance")
    if instance is None:
        return None
    # The mapped object is the user's: read the state from its __dict__, run none of its code.
    try:
        found: object = inspect.getattr_static(instance, "_sa_instance_state")
    except AttributeError:
        return None
    return found


def _load_kind(frames: list[Frame], state: InstanceState[Any] | None, key: str) -> LoadKind:
    if state is not None and (state.expired or key in state.expired_attributes):
        return LoadKind.EXPIRED
    for frame in frames:
        if frame.module == "sqlalchemy.orm.state" and frame.function == "_load_expired":
            return LoadKind.EXPIRED
        if frame.module == "sqlalchemy.orm.strategies":
            strategy = type(frame.local("self")).__name__.lstrip("_")
            if strategy == "DeferredColumnLoader":
                return LoadKind.DEFERRED
            if strategy == "LazyLoader":
                return LoadKind.LAZY
    return LoadKind.LAZY


def _expiring_listener(session: Session | None) -> str | None:
    """A session listener that expires everything at transaction end (the 1.x recipe)."""
    if session is None:
        return None
    for event_name in ("after_transaction_end", "after_transaction_create"):
        for listener in getattr(session.dispatch, event_name, ()):
            try:
                source = inspect.getsource(listener)
            except (OSError, TypeError):  # no source to read (a builtin, a REPL lambda)
                continue
            if "expire_all" in source:
                named = listener if inspect.isroutine(listener) else type(listener)
                return str(named.__qualname__)
    return None


def _test_frame(frames: list[Frame], test_path: Path | None) -> Frame | None:
    """The innermost frame in the test's own file: how the test reached the read."""
    if test_path is None:
        return None
    in_test_file = [frame for frame in frames if Path(frame.filename) == test_path]
    return in_test_file[-1] if in_test_file else None


def _accessor(frames: list[Frame]) -> Frame | None:
    """The frame that read the attribute (just outside SQLAlchemy's attribute machinery)."""
    for index, frame in enumerate(frames):
        if frame.module == "sqlalchemy.orm.attributes" and index > 0:
            return frames[index - 1]
    return None
