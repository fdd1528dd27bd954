"""Settings: where the server is, what the schema is, what the app and sessionmakers are.

Everything here is parsing and validation of strings; nothing connects or imports application
code. Objects named by ``pkg.module:attr`` are imported the first time they are needed, through
``ObjectRef.load()``.

Precedence: command line beats environment beats ini (``--pg-url`` > ``PGHARNESS_URL`` >
``pgharness_url``); no URL anywhere means an embedded server started for the run.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._errors import ConfigurationError

if TYPE_CHECKING:
    import pytest

__all__ = [
    "INI_KEYS",
    "AlembicSchema",
    "ClientOptions",
    "MetadataSchema",
    "ObjectRef",
    "SchemaSource",
    "ServerUrl",
    "Settings",
    "check_ini_keys",
    "command_line_option",
    "ini_keys",
    "mask_url",
    "parse_object_ref",
    "parse_schema",
    "parse_server_url",
    "read_settings",
    "resolve_settings",
]

#: Every ini key pgharness reads; any other ``pgharness*`` key is a typo and stops the run.
INI_KEYS: frozenset[str] = frozenset(
    {
        "pgharness_url",
        "pgharness_schema",
        "pgharness_sessionmakers",
        "pgharness_app",
        "pgharness_setup_sql",
        "pgharness_allow_urls",
        "pgharness_client_base_url",
        "pgharness_client_headers",
        "pgharness_lifespan",
    }
)

#: What each ``pkg.module:attr`` setting names, as an example for its messages.
_OBJECT_REF_EXAMPLES = {
    "pgharness_app": "myapp.main:app",
    "pgharness_schema": "myapp.models:Base",
    "pgharness_sessionmakers": "myapp.db:SessionLocal",
}

URL_ENV = "PGHARNESS_URL"
#: Where relative request paths go when ``pgharness_client_base_url`` is not set.
DEFAULT_BASE_URL = "http://testserver"
URL_OPTION = "pg_url"  # dest of --pg-url

UrlSource = Literal["option", "env", "ini", "default"]

_OBJECT_REF = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_PASSWORD_IN_URL = re.compile(r"(?P<head>://[^:/@?#]*:)(?P<password>[^@/?#]*)(?P<tail>@)")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for messages and headers)."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['head']}***{m['tail']}", url)


@dataclass(frozen=True)
class ObjectRef:
    """A ``pkg.module:attr`` string from a setting, imported on demand."""

    module: str
    attr: str
    setting: str

    def __str__(self) -> str:
        return f"{self.module}:{self.attr}"

    def load(self) -> object:
        """Import the module and return the attribute, or raise ``ConfigurationError``."""
        try:
            target: object = importlib.import_module(self.module)
        except Exception as exc:
            raise ConfigurationError(
                f"{self.setting} = {str(self)!r}: importing {self.module!r} failed "
                f"({type(exc).__name__}: {exc}). Fix: make the module importable from pytest's "
                f"rootdir (installed, or on pythonpath) or correct {self.setting}."
            ) from exc
        for part in self.attr.split("."):
            try:
                target = getattr(target, part)
            except AttributeError as exc:
                close = difflib.get_close_matches(part, _public_names(target), n=3, cutoff=0.6)
                hint = f" Did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
                raise ConfigurationError(
                    f"{self.setting} = {str(self)!r}: module {self.module!r} has no attribute "
                    f"{self.attr!r}.{hint} Fix: name an existing object in {self.setting}."
                ) from exc
        return target


def _public_names(target: object) -> list[str]:
    # The module's own namespace only: a lookup through dir() could run the user's
    # __getattr__ / __dir__.
    namespace = getattr(target, "__dict__", {})
    return sorted(name for name in namespace if not name.startswith("_"))


@dataclass(frozen=True)
class MetadataSchema:
    """``pkg.module:Base``: a ``MetaData`` or declarative base, built with ``create_all``."""

    ref: ObjectRef


@dataclass(frozen=True)
class AlembicSchema:
    """``alembic:path/to/alembic.ini``: built with ``alembic upgrade head``."""

    ini_path: Path  # absolute (resolved against pytest's rootdir)
    setting: str = "pgharness_schema"


SchemaSource = MetadataSchema | AlembicSchema


@dataclass(frozen=True)
class ServerUrl:
    """A user-given server URL, split into what both drivers need."""

    raw: str
    username: str | None
    password: str | None
    host: str | None
    port: int | None
    database: str | None
    query: tuple[tuple[str, str], ...]

    @property
    def masked(self) -> str:
        return mask_url(self.raw)


@dataclass(frozen=True)
class ClientOptions:
    """How ``client`` and ``async_client`` talk to the app."""

    base_url: str = DEFAULT_BASE_URL
    headers: tuple[tuple[str, str], ...] = ()
    #: Whether the clients run the app's lifespan (``pgharness_lifespan = off`` skips it).
    lifespan: bool = True


@dataclass(frozen=True)
class Settings:
    """Every pgharness setting, resolved and validated (no IO was done)."""

    url: ServerUrl | None
    url_source: UrlSource
    schema: SchemaSource | None
    sessionmakers: tuple[ObjectRef, ...]
    app: ObjectRef | None
    rootpath: Path
    #: SQL run in the template database before the schema is built (extensions, roles).
    setup_sql: str = ""
    #: External databases the suite may reach on purpose (``pgharness_allow_urls``).
    allow_urls: tuple[ServerUrl, ...] = ()
    #: How ``client`` and ``async_client`` reach the app (``pgharness_client_*``, ``_lifespan``).
    client: ClientOptions = field(default_factory=ClientOptions)

    def server_description(self) -> str:
        where = self.url.masked if self.url is not None else "embedded"
        return f"server={where} (from {self.url_source})"


def parse_object_ref(value: str, setting: str) -> ObjectRef:
    text = value.strip()
    if not _OBJECT_REF.match(text):
        raise ConfigurationError(
            f"{setting} = {value!r} is not of the form 'pkg.module:attr'. "
            f"Fix: write the module path, a colon and the object's name, "
            f"e.g. {setting} = {_OBJECT_REF_EXAMPLES.get(setting, 'myapp.module:name')}."
        )
    module, attr = text.split(":", 1)
    return ObjectRef(module=module, attr=attr, setting=setting)


def parse_schema(value: str, rootpath: Path, setting: str = "pgharness_schema") -> SchemaSource:
    text = value.strip()
    if text.startswith("alembic:"):
        path_text = text.removeprefix("alembic:").strip()
        if not path_text:
            raise ConfigurationError(
                f"{setting} = {value!r} names no alembic.ini. "
                f"Fix: {setting} = alembic:path/to/alembic.ini (relative to {rootpath})."
            )
        path = Path(path_text)
        if not path.is_absolute():
            path = rootpath / path
        return AlembicSchema(ini_path=path, setting=setting)
    try:
        ref = parse_object_ref(text, setting)
    except ConfigurationError:
        raise ConfigurationError(
            f"{setting} = {value!r} is neither 'pkg.module:Base' nor "
            f"'alembic:path/to/alembic.ini'. "
            f"Fix: name your declarative base or MetaData (e.g. myapp.models:Base), "
            f"or your alembic.ini as alembic:alembic.ini."
        ) from None
    return MetadataSchema(ref=ref)


def parse_server_url(value: str, setting: str) -> ServerUrl:
    from sqlalchemy.engine import make_url  # only when a URL is given: keeps no-URL runs light
    from sqlalchemy.exc import ArgumentError

    text = value.strip()
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(
            f"{setting} = {mask_url(text)!r} is not a database URL. "
            f"Fix: use the form postgresql://user:password@host:5432/dbname "
            f"(any driver prefix such as postgresql+asyncpg:// works)."
        ) from exc
    if url.get_backend_name() != "postgresql":
        raise ConfigurationError(
            f"{setting} = {mask_url(text)!r} is not a PostgreSQL URL "
            f"(backend {url.get_backend_name()!r}). Fix: use postgresql://user@host:5432/dbname."
        )
    query: list[tuple[str, str]] = []
    for key, val in url.query.items():
        if isinstance(val, tuple):
            query.extend((key, v) for v in val)
        else:
            query.append((key, val))
    return ServerUrl(
        raw=text,
        username=url.username,
        password=url.password if url.password is None else str(url.password),
        host=url.host,
        port=url.port,
        database=url.database,
        query=tuple(query),
    )


def resolve_settings(
    *,
    option_url: str | None,
    ini_url: str | None,
    ini_schema: str | None,
    ini_sessionmakers: list[str],
    ini_app: str | None,
    rootpath: Path,
    environ: dict[str, str] | None = None,
    ini_setup_sql: str | None = None,
    ini_allow_urls: list[str] | None = None,
    ini_client_base_url: str | None = None,
    ini_client_headers: list[str] | None = None,
    ini_lifespan: str | None = None,
) -> Settings:
    """Combine command line, environment and ini into validated ``Settings``.

    Raises ``ConfigurationError`` naming the setting and the fix.
    """
    env = os.environ if environ is None else environ
    url_source: UrlSource = "default"
    url_text: str | None = None
    url_setting = "pgharness_url"
    if option_url:
        url_text, url_source, url_setting = option_url, "option", "--pg-url"
    elif env.get(URL_ENV):
        url_text, url_source, url_setting = env[URL_ENV], "env", URL_ENV
    elif ini_url:
        url_text, url_source = ini_url, "ini"
    url = parse_server_url(url_text, url_setting) if url_text else None

    schema = parse_schema(ini_schema, rootpath) if ini_schema and ini_schema.strip() else None
    sessionmakers = tuple(
        parse_object_ref(line, "pgharness_sessionmakers")
        for line in ini_sessionmakers
        if line.strip()
    )
    app = parse_object_ref(ini_app, "pgharness_app") if ini_app and ini_app.strip() else None
    allow_urls = tuple(
        parse_server_url(line, "pgharness_allow_urls")
        for line in ini_allow_urls or []
        if line.strip()
    )
    return Settings(
        url=url,
        url_source=url_source,
        schema=schema,
        sessionmakers=sessionmakers,
        app=app,
        rootpath=rootpath,
        setup_sql=(ini_setup_sql or "").strip(),
        allow_urls=allow_urls,
        client=ClientOptions(
            base_url=parse_client_base_url(ini_client_base_url),
            headers=parse_client_headers(ini_client_headers or []),
            lifespan=parse_lifespan(ini_lifespan),
        ),
    )


def parse_client_base_url(value: str | None) -> str:
    """``pgharness_client_base_url``: where the clients' relative URLs start."""
    text = (value or "").strip()
    if not text:
        return DEFAULT_BASE_URL
    scheme, _, rest = text.partition("://")
    host = rest.split("/", 1)[0]
    if scheme not in ("http", "https") or not host or "@" in host:
        raise ConfigurationError(
            f"pgharness_client_base_url = {mask_url(text)!r} is not an http(s) URL with a host. "
            "Fix: write the URL every request path is relative to, e.g. "
            "pgharness_client_base_url = http://testserver/v1."
        )
    return text.rstrip("/")


def parse_client_headers(lines: list[str]) -> tuple[tuple[str, str], ...]:
    """``pgharness_client_headers``: one ``Name: value`` per line."""
    headers: list[tuple[str, str]] = []
    for number, line in enumerate((line for line in lines if line.strip()), start=1):
        name, colon, value = line.partition(":")
        if not colon or not _HEADER_NAME.match(name.strip()):
            # The line may hold a credential: it is named by its position, never quoted.
            raise ConfigurationError(
                f"pgharness_client_headers: line {number} is not of the form 'Name: value'. "
                "Fix: write one header per line, e.g. pgharness_client_headers = "
                "Host: api.example.com."
            )
        headers.append((name.strip(), value.strip()))
    return tuple(headers)


def parse_lifespan(value: str | None) -> bool:
    """``pgharness_lifespan``: ``on`` (default) runs the app's lifespan in the clients."""
    text = (value or "").strip().lower()
    if text in ("", "on"):
        return True
    if text == "off":
        return False
    raise ConfigurationError(
        f"pgharness_lifespan = {value!r}: expected 'on' or 'off'. Fix: pgharness_lifespan = off "
        "skips the app's lifespan in client and async_client; remove the key to run it."
    )


def check_ini_keys(keys: Iterable[str]) -> None:
    """Stop on a ``pgharness_*`` ini key pgharness does not know (a typo would be ignored).

    Raises ``ConfigurationError`` with the closest known key.
    """
    for key in sorted(keys):
        if not key.startswith("pgharness") or key in INI_KEYS:
            continue
        close = difflib.get_close_matches(key, sorted(INI_KEYS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigurationError(
            f"pgharness: unknown ini key {key!r}: {hint}pgharness reads only "
            f"{', '.join(sorted(INI_KEYS))}. Fix: correct or remove {key!r} in your pytest "
            "configuration (pyproject.toml [tool.pytest.ini_options], pytest.ini, tox.ini or "
            "setup.cfg)."
        )


def read_settings(config: pytest.Config) -> Settings:
    """The run's settings from pytest's command line and ini, checked.

    Raises ``ConfigurationError`` for an unknown ``pgharness_*`` key or a bad value.
    """
    check_ini_keys(ini_keys(config))
    return resolve_settings(
        option_url=command_line_option(config, "pg_url", None),
        ini_url=str(config.getini("pgharness_url") or ""),
        ini_schema=str(config.getini("pgharness_schema") or ""),
        ini_sessionmakers=list(config.getini("pgharness_sessionmakers") or []),
        ini_app=str(config.getini("pgharness_app") or ""),
        rootpath=config.rootpath,
        ini_setup_sql=str(config.getini("pgharness_setup_sql") or ""),
        ini_allow_urls=list(config.getini("pgharness_allow_urls") or []),
        ini_client_base_url=str(config.getini("pgharness_client_base_url") or ""),
        ini_client_headers=list(config.getini("pgharness_client_headers") or []),
        ini_lifespan=str(config.getini("pgharness_lifespan") or ""),
    )


def command_line_option(config: pytest.Config, name: str, default: Any = None) -> Any:
    """A command-line option's value, also while the first conftests load (pytest has parsed
    only the options it knows of then, into ``known_args_namespace``)."""
    value = getattr(getattr(config, "known_args_namespace", None), name, None)
    if value is None:
        value = getattr(config.option, name, None)
    return default if value is None else value


def ini_keys(config: pytest.Config) -> set[str]:
    """Every key of the run's ini file, registered or not (pytest warns about unknown ones
    only, and a misspelled pgharness key must stop the run)."""
    raw = getattr(config, "_inicfg", None)  # pytest >= 9.1; its public inicfg is deprecated
    if raw is None:
        raw = config.inicfg
    return {str(key) for key in raw}
