"""The template layer: the schema built once into a template database.

The template is named by a hash of its source (the DDL ``create_all`` would run, or the
migration files plus the alembic config), so an unchanged schema finds its template from an
earlier run and a changed one gets a new template. A run holds a shared advisory lock on the
template it clones from for its whole life; stale templates are dropped only when no run
holds theirs. A template is complete once it is marked ``IS_TEMPLATE``; one left half-built
by a killed run is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._config import AlembicSchema, MetadataSchema, SchemaSource, mask_url
from ._errors import ConfigurationError, SchemaError
from ._names import TEMPLATE_NAME, advisory_key, project_lineage, template_name

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import MetaData

    from ._server import ServerAddress

__all__ = ["Template", "ensure_template", "recipe_for"]

# Bumped when the way templates are built changes, so old templates are not reused.
_BUILD_FORMAT = "pgharness-template-1"


@dataclass(frozen=True)
class Template:
    name: str
    reused: bool
    seconds: float  # time to find or build it (including hashing the source)
    dropped_stale: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Recipe:
    digest: str
    build: Callable[[ServerAddress, str], None]  # (address, database) -> None
    label: str
    lineage: str = ""  # whose schema: the project's rootdir and the setting


# --- metadata form -------------------------------------------------------------------------


def _load_metadata(schema: MetadataSchema) -> MetaData:
    from sqlalchemy import MetaData

    obj = schema.ref.load()
    metadata = obj if isinstance(obj, MetaData) else getattr(obj, "metadata", None)
    if not isinstance(metadata, MetaData):
        raise ConfigurationError(
            f"pgharness_schema = {str(schema.ref)!r} is a {type(obj).__name__}, not a MetaData or "
            f"a declarative base. Fix: name your declarative base (e.g. myapp.models:Base) or "
            f"its MetaData."
        )
    return metadata


def _metadata_ddl(metadata: MetaData) -> list[str]:
    from sqlalchemy import create_mock_engine

    statements: list[str] = []

    def record(sql: object, *args: object, **kwargs: object) -> None:
        statements.append(str(sql.compile(dialect=engine.dialect)).strip())  # type: ignore[attr-defined]

    engine = create_mock_engine("postgresql+psycopg://", record)
    metadata.create_all(engine, checkfirst=False)
    return statements


def _metadata_recipe(schema: MetadataSchema) -> _Recipe:
    metadata = _load_metadata(schema)
    digest = hashlib.sha256()
    for statement in sorted(_metadata_ddl(metadata)):
        digest.update(statement.encode())
        digest.update(b"\0")

    def build(address: ServerAddress, database: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        engine = create_engine(address.url("postgresql+psycopg", database), poolclass=NullPool)
        try:
            metadata.create_all(engine)
        finally:
            engine.dispose()

    return _Recipe(digest=digest.hexdigest(), build=build, label=str(schema.ref))


# --- alembic form --------------------------------------------------------------------------


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    # Alembic resolves a relative script_location against the working directory; settings
    # are relative to pytest's rootdir.
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _alembic_recipe(schema: AlembicSchema, rootpath: Path) -> _Recipe:
    ini = schema.ini_path
    if not ini.is_file():
        raise ConfigurationError(
            f"pgharness_schema = 'alembic:{ini}': no such file. Fix: give the path of your "
            f"alembic.ini relative to {rootpath}."
        )
    try:
        from alembic.config import Config
        from alembic.script import ScriptDirectory
    except ImportError:
        raise ConfigurationError(
            "pgharness_schema names an alembic.ini but alembic is not installed. "
            "Fix: pip install 'pgharness[alembic]'."
        ) from None
    with _working_directory(rootpath):
        try:
            script_dir = Path(ScriptDirectory.from_config(Config(str(ini))).dir).resolve()
        except Exception as exc:
            raise ConfigurationError(
                f"pgharness_schema = 'alembic:{ini}': alembic cannot read it ({exc}). Fix: check "
                f"script_location in that file."
            ) from exc
    digest = hashlib.sha256(ini.read_bytes())
    for path in sorted(script_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(script_dir)).encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
    env_text = ""
    with contextlib.suppress(OSError):
        env_text = (script_dir / "env.py").read_text()
    is_async = any(word in env_text for word in ("async_engine_from_config", "create_async_engine"))

    def build(address: ServerAddress, database: str) -> None:
        from alembic import command

        driver = "postgresql+asyncpg" if is_async else "postgresql+psycopg"
        url = address.url(driver, database)
        with _working_directory(rootpath):
            cfg = Config(str(ini))
            cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
            # env.py may call asyncio.run() itself: run it where no event loop is running.
            _in_thread(lambda: command.upgrade(cfg, "head"))

    return _Recipe(digest=digest.hexdigest(), build=build, label=f"alembic:{ini}")


def _in_thread(work: Callable[[], object]) -> None:
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="pgharness-alembic")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _empty_recipe() -> _Recipe:
    return _Recipe(digest=hashlib.sha256(b"empty").hexdigest(), build=lambda a, d: None, label="")


def recipe_for(schema: SchemaSource | None, rootpath: Path) -> _Recipe:
    """How to build ``schema`` and the hash naming its template (imports the schema's code)."""
    if schema is None:
        recipe = _empty_recipe()
    elif isinstance(schema, MetadataSchema):
        recipe = _metadata_recipe(schema)
    else:
        recipe = _alembic_recipe(schema, rootpath)
    digest = hashlib.sha256(f"{_BUILD_FORMAT}:{recipe.digest}".encode()).hexdigest()
    lineage = project_lineage(rootpath, recipe.label)
    return _Recipe(digest=digest, build=recipe.build, label=recipe.label, lineage=lineage)


# --- finding or building -------------------------------------------------------------------


def _ident(name: str) -> str:
    assert TEMPLATE_NAME.match(name), name
    return f'"{name}"'


def ensure_template(
    conn: psycopg.Connection[tuple[object, ...]],
    address: ServerAddress,
    recipe: _Recipe,
    *,
    recipe_seconds: float = 0.0,
) -> Template:
    """Find or build the template for ``recipe``; ``conn`` holds its use-lock afterwards."""
    started = time.perf_counter() - recipe_seconds
    name = template_name(recipe.lineage, recipe.digest)
    conn.execute("SELECT pg_advisory_lock_shared(%s)", (advisory_key("template-use", name),))
    build_key = advisory_key("template-build", name)
    conn.execute("SELECT pg_advisory_lock(%s)", (build_key,))
    try:
        row = conn.execute(
            "SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        reused = bool(row and row[0])
        if not reused:
            if row is not None:  # half-built by a run that died
                conn.execute(f"DROP DATABASE {_ident(name)} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {_ident(name)} TEMPLATE template0 ENCODING 'UTF8'")
            try:
                recipe.build(address, name)
            except ConfigurationError:
                conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
                raise
            except Exception as exc:
                conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
                detail = mask_url(f"{type(exc).__name__}: {exc}")
                alembic = recipe.label.startswith("alembic:")
                what = "the migrations run" if alembic else "create_all() succeed"
                if address.password:
                    detail = detail.replace(address.password, "***")
                raise SchemaError(
                    f"pgharness could not build the schema from pgharness_schema = "
                    f"{recipe.label!r}: {detail}. Fix: make the "
                    f"{what} against an empty database, or correct pgharness_schema."
                ) from exc
            conn.execute(f"ALTER DATABASE {_ident(name)} WITH IS_TEMPLATE true")
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (build_key,))
    dropped = _drop_stale_templates(conn, keep=name)
    return Template(
        name=name,
        reused=reused,
        seconds=time.perf_counter() - started,
        dropped_stale=tuple(dropped),
    )


def _drop_stale_templates(conn: psycopg.Connection[tuple[object, ...]], keep: str) -> list[str]:
    """Drop the other templates of ``keep``'s lineage that no live run clones from."""
    kept = TEMPLATE_NAME.match(keep)
    assert kept is not None, keep
    names = [
        str(row[0])
        for row in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pgh\\_tpl\\_%'"
        )
    ]
    dropped: list[str] = []
    for name in names:
        match = TEMPLATE_NAME.match(name)
        if name == keep or match is None or match["lineage"] != kept["lineage"]:
            continue
        key = advisory_key("template-use", name)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not (row and row[0]):
            continue  # a live run still clones from it
        try:
            conn.execute(f"ALTER DATABASE {_ident(name)} WITH IS_TEMPLATE false")
            conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
            dropped.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return dropped
