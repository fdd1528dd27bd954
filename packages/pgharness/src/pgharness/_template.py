"""The template layer: the schema built once into a template database.

The template is named by its lineage (the schema setting as written, relative to pytest's
rootdir: where the checkout lies does not matter) and a hash of its source (the DDL
``create_all`` would run with the rows its ``after_create`` listeners insert, or the migration
files plus the alembic config; and ``pgharness_setup_sql``). An unchanged schema finds its
template from an earlier run, a changed one gets a new template.

A build runs ``pgharness_setup_sql`` first (extensions, roles), then creates every schema the
metadata names before ``create_all``, or runs ``alembic upgrade heads`` handing ``env.py``
pgharness's connection; a migrated template counts as built only once its version table is
at the script directory's heads.

A run holds a shared advisory lock on the template it clones from for its whole life. A
server keeps the three most recently used templates of a lineage that no live run holds;
older ones are dropped. A template is complete once it is marked ``IS_TEMPLATE``; one left
half-built by a killed run is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._blocker import template_build
from ._config import AlembicSchema, MetadataSchema, SchemaSource, mask_url
from ._errors import ConfigurationError, PgHarnessError, SchemaError
from ._names import TEMPLATE_NAME, advisory_key, project_lineage, template_name
from ._openers import ALEMBIC_ENV_FIX

if TYPE_CHECKING:
    import logging

    import psycopg
    from sqlalchemy import MetaData

    from ._server import ServerAddress

__all__ = ["KEPT_TEMPLATES", "Template", "alembic_script_dir", "ensure_template", "recipe_for"]

# Bumped when the way templates are built changes, so old templates are not reused.
_BUILD_FORMAT = "pgharness-template-2"

#: Templates of one lineage a server keeps (the most recently used; those a live run holds
#: are never dropped and not counted).
KEPT_TEMPLATES = 3


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
    label: str  # the schema setting as written, relative to the rootdir
    lineage: str = ""  # whose schema: a hash of the label
    setup_sql: str = ""


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


# A default repr holds a memory address, different in every process: left in, it would give
# the template a new name on every run.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _metadata_ddl(metadata: MetaData) -> list[str]:
    """What ``create_all`` runs, each statement with its parameters (seed rows included)."""
    from sqlalchemy import create_mock_engine

    statements: list[str] = []

    def record(sql: Any, parameters: object = None, *args: object, **kwargs: object) -> None:
        compiled = sql.compile(dialect=engine.dialect)
        text = str(compiled).strip()
        # An after_create listener's insert carries its rows as parameters (execute's, or the
        # statement's own from .values()), not in the SQL text.
        bound = None
        with contextlib.suppress(Exception):
            bound = compiled.params
        for values in (parameters, bound):
            if values:
                text += "\0" + _ADDRESS.sub("", repr(values))
        statements.append(text)

    engine = create_mock_engine("postgresql+psycopg://", record)
    metadata.create_all(engine, checkfirst=False)
    return statements


def _schemas_of(metadata: MetaData) -> list[str]:
    """The schemas the metadata's tables, sequences and enum types live in."""
    from sqlalchemy import Sequence

    names: set[str] = set()
    sequences: list[object] = list(getattr(metadata, "_sequences", {}).values())
    for table in metadata.tables.values():
        names.add(table.schema or "")
        for column in table.columns:
            names.add(getattr(column.type, "schema", None) or "")  # Enum and other SchemaTypes
            sequences.append(column.default)
    names.update(s.schema or "" for s in sequences if isinstance(s, Sequence))
    names.discard("")
    return sorted(names)


def _metadata_recipe(schema: MetadataSchema) -> _Recipe:
    metadata = _load_metadata(schema)
    digest = hashlib.sha256()
    for statement in sorted(_metadata_ddl(metadata)):
        digest.update(statement.encode())
        digest.update(b"\0")
    schemas = _schemas_of(metadata)
    label = str(schema.ref)

    def build(address: ServerAddress, database: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool
        from sqlalchemy.schema import CreateSchema

        with template_build(label):
            engine = create_engine(address.url("postgresql+psycopg", database), poolclass=NullPool)
            try:
                with engine.begin() as connection:
                    for name in schemas:
                        connection.execute(CreateSchema(name, if_not_exists=True))
                    metadata.create_all(connection)
            finally:
                engine.dispose()

    return _Recipe(digest=digest.hexdigest(), build=build, label=label)


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


@dataclass(frozen=True)
class _LoggerState:
    level: int
    handlers: tuple[logging.Handler, ...]
    filters: tuple[Any, ...]
    disabled: bool
    propagate: bool

    @classmethod
    def of(cls, logger: logging.Logger) -> _LoggerState:
        return cls(
            level=logger.level,
            handlers=tuple(logger.handlers),
            filters=tuple(logger.filters),
            disabled=logger.disabled,
            propagate=logger.propagate,
        )

    def restore(self, logger: logging.Logger) -> None:
        logger.setLevel(self.level)
        logger.handlers = list(self.handlers)
        logger.filters = list(self.filters)
        logger.disabled = self.disabled
        logger.propagate = self.propagate


def _skip_logging_config(*args: object, **kwargs: object) -> None:
    """Stands in for ``fileConfig`` / ``dictConfig`` while ``env.py`` runs."""


@contextlib.contextmanager
def _logging_left_as_found() -> Iterator[None]:
    """Run a migration without touching the test process's logging.

    Alembic's ``env.py`` calls ``fileConfig(alembic.ini)``, which closes every handler (a
    ``mode="w"`` log file stops for good), disables every logger it does not name and sends
    Alembic's INFO lines to stderr. While the build runs that call (and ``dictConfig``) does
    nothing and Alembic's own loggers stay below INFO; afterwards every logger is restored.
    """
    import logging
    import logging.config

    alembic_logger = logging.getLogger("alembic")  # made now: the snapshot covers it
    manager = logging.Logger.manager
    loggers = [logging.root] + [
        logger for logger in list(manager.loggerDict.values()) if isinstance(logger, logging.Logger)
    ]
    saved = {logger: _LoggerState.of(logger) for logger in loggers}
    disabled_below = manager.disable
    file_config, dict_config = logging.config.fileConfig, logging.config.dictConfig
    logging.config.fileConfig = _skip_logging_config
    logging.config.dictConfig = _skip_logging_config
    alembic_logger.setLevel(max(logging.WARNING, alembic_logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logging.config.fileConfig = file_config
        logging.config.dictConfig = dict_config
        for logger, state in saved.items():
            state.restore(logger)
        for made in list(manager.loggerDict.values()):
            if isinstance(made, logging.Logger) and made not in saved:
                made.disabled = False  # made during the build: nothing may have silenced it
        logging.disable(disabled_below)


def _alembic_label(ini: Path, rootpath: Path) -> str:
    try:
        relative = ini.relative_to(rootpath)
    except ValueError:
        relative = Path(os.path.relpath(ini, rootpath))
    return f"alembic:{relative.as_posix()}"


def alembic_script_dir(schema: AlembicSchema, rootpath: Path) -> Path:
    """The migrations folder (``env.py``'s) named by the alembic.ini of ``pgharness_schema``.

    Raises ``ConfigurationError`` naming the setting and the fix.
    """
    ini = schema.ini_path
    label = _alembic_label(ini, rootpath)
    if not ini.is_file():
        raise ConfigurationError(
            f"pgharness_schema = {label!r}: no such file. Fix: give the path of your "
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
            return Path(ScriptDirectory.from_config(Config(str(ini))).dir).resolve()
        except Exception as exc:
            raise ConfigurationError(
                f"pgharness_schema = {label!r}: alembic cannot read it ({exc}). Fix: check "
                f"script_location in that file."
            ) from exc


def _alembic_recipe(schema: AlembicSchema, rootpath: Path) -> _Recipe:
    ini = schema.ini_path
    label = _alembic_label(ini, rootpath)
    script_dir = alembic_script_dir(schema, rootpath)
    digest = hashlib.sha256(ini.read_bytes())
    for path in sorted(script_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(script_dir)).encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
    env_path = script_dir / "env.py"
    env_text = ""
    with contextlib.suppress(OSError):
        env_text = env_path.read_text()
    is_async = any(word in env_text for word in ("async_engine_from_config", "create_async_engine"))

    def build(address: ServerAddress, database: str) -> None:
        from alembic import command
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        # sqlalchemy.url for an env.py that makes its own engine (asyncpg for an async one),
        # and an open connection for one written the cookbook's way.
        url = address.url("postgresql+asyncpg" if is_async else "postgresql+psycopg", database)
        sync_url = address.url("postgresql+psycopg", database)
        with _working_directory(rootpath), _logging_left_as_found():
            cfg = Config(str(ini))
            cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))

            def upgrade() -> None:
                with template_build(label, alembic_env=env_path):
                    engine = create_engine(sync_url, poolclass=NullPool)
                    try:
                        # Handed over outside a transaction (the cookbook's caller uses
                        # engine.begin()): Alembic then runs its own, so that a migration's
                        # autocommit_block() (CREATE INDEX CONCURRENTLY) works as it does
                        # from the command line. What env.py leaves open is committed.
                        with engine.connect() as connection:
                            cfg.attributes["connection"] = connection
                            command.upgrade(cfg, "heads")
                            if connection.in_transaction():
                                connection.commit()
                    finally:
                        engine.dispose()

            # env.py may call asyncio.run() itself: run it where no event loop is running.
            _in_thread(upgrade)
            heads = ScriptDirectory.from_config(cfg).get_heads()
        _check_version_table(address, database, heads, label=label, env_path=env_path)

    return _Recipe(digest=digest.hexdigest(), build=build, label=label)


def _version_tables(address: ServerAddress, database: str) -> dict[str, list[str]]:
    """Each table with a ``version_num`` column (``alembic_version`` first) and its rows.

    ``env.py`` may name the table and its schema (``version_table``, ``version_table_schema``).
    """
    from psycopg import sql

    found: dict[str, list[str]] = {}
    with address.connect(database) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE a.attname = 'version_num' AND NOT a.attisdropped "
            "AND c.relkind IN ('r', 'p') "
            "AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' "
            "ORDER BY c.relname <> 'alembic_version', n.nspname, c.relname"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT version_num FROM {}").format(
                sql.Identifier(str(schema), str(table))
            )
            found[f"{schema}.{table}"] = sorted(str(row[0]) for row in conn.execute(query))
    return found


def _check_version_table(
    address: ServerAddress, database: str, heads: list[str], *, label: str, env_path: Path
) -> None:
    """Raise ``SchemaError`` unless the template's version table is at ``heads``.

    ``upgrade`` succeeds whatever database ``env.py`` migrated: this check is what tells a
    migrated template from an empty one.
    """
    if not heads:
        return  # no revisions: nothing to run
    found = _version_tables(address, database)
    if any(set(revisions) == set(heads) for revisions in found.values()):
        return
    wanted = ", ".join(sorted(heads))
    if found:
        held = "; ".join(
            f"its {table} holds {', '.join(revisions) or 'no revision'}"
            for table, revisions in found.items()
        )
        what = f"{held}, not the head {wanted}"
    else:
        what = f"it has no Alembic version table (alembic_version at the head {wanted})"
    raise SchemaError(
        f"pgharness_schema = {label!r}: `alembic upgrade heads` ran, but the migrations did not "
        f"run in pgharness's database: {what}. Cause: {env_path} connects to a database of its "
        f"own (a URL from the app's settings or the environment) instead of the one pgharness "
        f"hands it, or runs no migrations when called from Python. Fix: {ALEMBIC_ENV_FIX}"
    )


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


def recipe_for(schema: SchemaSource | None, rootpath: Path, setup_sql: str = "") -> _Recipe:
    """How to build ``schema`` and the hash naming its template (imports the schema's code).

    ``setup_sql`` (``pgharness_setup_sql``) runs in the template database before the schema
    is built; it is part of the hash.
    """
    if schema is None:
        recipe = _empty_recipe()
    elif isinstance(schema, MetadataSchema):
        recipe = _metadata_recipe(schema)
    else:
        recipe = _alembic_recipe(schema, rootpath)
    setup_sql = setup_sql.strip()
    setup_hash = hashlib.sha256(setup_sql.encode()).hexdigest()
    digest = hashlib.sha256(f"{_BUILD_FORMAT}:{recipe.digest}:{setup_hash}".encode()).hexdigest()
    return _Recipe(
        digest=digest,
        build=recipe.build,
        label=recipe.label,
        lineage=project_lineage(recipe.label),
        setup_sql=setup_sql,
    )


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
                _run_setup_sql(address, name, recipe.setup_sql)
                recipe.build(address, name)
            except Exception as exc:
                _drop_quietly(conn, name)
                ours = _pgharness_error_in(exc)
                if ours is exc:
                    raise
                if ours is not None:
                    raise ours from exc
                raise _build_failure(recipe, address, exc) from exc
            except BaseException:
                _drop_quietly(conn, name)
                raise
            conn.execute(f"ALTER DATABASE {_ident(name)} WITH IS_TEMPLATE true")
        _mark_used(conn, name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (build_key,))
    dropped = _drop_stale_templates(conn, keep=name)
    return Template(
        name=name,
        reused=reused,
        seconds=time.perf_counter() - started,
        dropped_stale=tuple(dropped),
    )


def _pgharness_error_in(exc: BaseException) -> PgHarnessError | None:
    """pgharness's own error behind ``exc`` (env.py may have wrapped it), if there is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, PgHarnessError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _build_failure(recipe: _Recipe, address: ServerAddress, exc: Exception) -> SchemaError:
    detail = mask_url(f"{type(exc).__name__}: {exc}")
    if address.password:
        detail = detail.replace(address.password, "***")
    alembic = recipe.label.startswith("alembic:")
    what = "migrations run" if alembic else "create_all() succeed"
    return SchemaError(
        f"pgharness could not build the schema from pgharness_schema = "
        f"{recipe.label!r}: {detail}. Fix: make the "
        f"{what} against an empty database, or correct pgharness_schema."
    )


def _run_setup_sql(address: ServerAddress, database: str, setup_sql: str) -> None:
    """Run ``pgharness_setup_sql`` (one or several statements) in the new template database."""
    import psycopg

    if not setup_sql:
        return
    try:
        with address.connect(database) as conn:
            # Without parameters psycopg sends the text as it is: several statements may run.
            conn.execute(setup_sql.encode())
    except psycopg.Error as exc:
        detail = mask_url(str(exc).strip() or type(exc).__name__)
        if address.password:
            detail = detail.replace(address.password, "***")
        raise SchemaError(
            f"pgharness_setup_sql failed in the new template database: {detail.rstrip('.')}. "
            f"Fix: correct pgharness_setup_sql; it runs in an empty database before the schema "
            f"is built, on a server other runs may share (CREATE EXTENSION IF NOT EXISTS ...; "
            f"roles are server-wide: create them only if missing)."
        ) from None


def _drop_quietly(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    with contextlib.suppress(Exception):
        conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")


_USED_COMMENT = "pgharness template; last used {at}"
_USED_AT = re.compile(r"^pgharness template; last used (?P<at>[0-9]+)$")


def _mark_used(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    """Record on the template (server clock) that a run used it: pruning keeps the newest."""
    import psycopg
    from psycopg import sql

    # Another role's template is left as it is.
    with contextlib.suppress(psycopg.Error), conn.transaction():
        # COMMENT waits for a clone of this template another run is making; not longer.
        conn.execute("SET LOCAL lock_timeout = '5s'")
        row = conn.execute("SELECT floor(extract(epoch FROM clock_timestamp()))::bigint").fetchone()
        assert row is not None
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(_USED_COMMENT.format(at=int(str(row[0]))))
            )
        )


def _last_used(comment: object) -> int:
    match = _USED_AT.match(str(comment or ""))
    return int(match["at"]) if match else 0


def _drop_stale_templates(conn: psycopg.Connection[tuple[object, ...]], keep: str) -> list[str]:
    """Keep ``keep`` and the most recently used others of its lineage, up to KEPT_TEMPLATES.

    Templates a live run holds (its use-lock) are neither dropped nor counted; a half-built
    one nobody holds is dropped. Only names matching ``TEMPLATE_NAME`` are ever considered.
    """
    import psycopg

    kept = TEMPLATE_NAME.match(keep)
    assert kept is not None, keep
    rows = conn.execute(
        "SELECT datname, datistemplate, shobj_description(oid, 'pg_database'), oid::bigint "
        "FROM pg_database WHERE datname LIKE 'pgh\\_tpl\\_%'"
    ).fetchall()
    siblings: list[tuple[bool, int, int, str]] = []
    for name, complete, comment, oid in rows:
        match = TEMPLATE_NAME.match(str(name))
        if name == keep or match is None or match["lineage"] != kept["lineage"]:
            continue
        siblings.append((bool(complete), _last_used(comment), int(str(oid)), str(name)))
    # Complete ones first, then the most recently used, then the most recently created.
    siblings.sort(reverse=True)
    room = KEPT_TEMPLATES - 1  # ``keep`` is one of them
    dropped: list[str] = []
    for complete, _, _, name in siblings:
        key = advisory_key("template-use", name)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not (row and row[0]):
            continue  # a live run clones from it, or is building it
        try:
            if complete and room > 0:
                room -= 1
                continue
            try:
                conn.execute(f"ALTER DATABASE {_ident(name)} WITH IS_TEMPLATE false")
                conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
            except psycopg.Error:
                # Another role's template: it stays, whole.
                with contextlib.suppress(psycopg.Error):
                    conn.execute(f"ALTER DATABASE {_ident(name)} WITH IS_TEMPLATE {complete}")
                continue
            dropped.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return dropped
