"""The server layer: a PostgreSQL server to put test databases on.

Either the server named by the URL setting (``ExternalServer``, here), or an embedded
PostgreSQL started once per run (``EmbeddedServer``, in ``_embedded``). Both expose a
``ServerAddress``: how to reach the server with either driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ._blocker import internal
from ._config import ServerUrl, mask_url
from ._errors import ServerError

if TYPE_CHECKING:
    import psycopg

__all__ = ["ExternalServer", "Server", "ServerAddress"]


@dataclass(frozen=True)
class ServerAddress:
    """How to reach a server: host (or socket directory), port, credentials, extra options."""

    host: str | None
    port: int | None
    user: str | None
    password: str | None
    maintenance_db: str
    query: tuple[tuple[str, str], ...] = ()

    def url(self, driver: str, database: str) -> str:
        """A SQLAlchemy URL string for ``database`` (password included, for connecting)."""
        from sqlalchemy.engine import URL

        query: dict[str, str | tuple[str, ...]] = {}
        for key, value in self.query:
            query[key] = value
        if self.host is not None and self.host.startswith("/"):
            query["host"] = self.host  # a socket directory goes in the query for both drivers
            host = None
        else:
            host = self.host
        url = URL.create(
            drivername=driver,
            username=self.user,
            password=self.password,
            host=host,
            port=self.port,
            database=database,
            query=query,
        )
        return url.render_as_string(hide_password=False)

    def connect(self, database: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit psycopg connection (for CREATE/DROP DATABASE and advisory locks)."""
        import psycopg

        kwargs: dict[str, object] = dict(self.query)
        if self.host is not None:
            kwargs["host"] = self.host
        if self.port is not None:
            kwargs["port"] = self.port
        if self.user is not None:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        kwargs["dbname"] = database or self.maintenance_db
        kwargs.setdefault("connect_timeout", 10)
        kwargs["application_name"] = "pgharness"
        with internal():  # the maintenance database is not one pgharness made: let it through
            return psycopg.connect(autocommit=True, **kwargs)  # type: ignore[arg-type]


class Server(Protocol):
    address: ServerAddress
    #: True when the whole server goes away with the run (nothing to drop one by one).
    disposable: bool

    @property
    def description(self) -> str: ...

    def close(self) -> None: ...


class ExternalServer:
    """A server the user named (``--pg-url`` / ``PGHARNESS_URL`` / ``pgharness_url``)."""

    disposable = False

    def __init__(self, url: ServerUrl, setting: str) -> None:
        self.url = url
        self.address = ServerAddress(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            maintenance_db=url.database or "postgres",
            query=url.query,
        )
        try:
            with self.address.connect() as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            detail = mask_url(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
            if url.password:
                detail = detail.replace(url.password, "***")
            raise ServerError(
                f"pgharness cannot connect to the PostgreSQL server {url.masked} "
                f"(from {setting}): {detail}. Fix: start that server or correct {setting} "
                f"(or unset it to use an embedded server)."
            ) from None

    @property
    def description(self) -> str:
        return self.url.masked

    def close(self) -> None:
        """Nothing to stop: the server is the user's."""
