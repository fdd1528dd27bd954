"""The ``dashtam`` command: ``serve`` and ``migrate``.

``dashtam serve`` without ``DATABASE_URL`` starts an embedded PostgreSQL whose data lives in
``./.dashtam/`` (kept across restarts), applies the migrations, and serves on
http://127.0.0.1:8000 until Ctrl-C or SIGTERM, then stops that PostgreSQL again.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from dashtam.core.config import ConfigurationError, Environment, Settings, get_settings
from dashtam.core.embedded import EmbeddedPostgres, EmbeddedPostgresError

_DATABASE_NAME = "dashtam"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dashtam", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the API (embedded PostgreSQL if no DATABASE_URL)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    commands.add_parser(
        "migrate", help="apply the database migrations (embedded if no DATABASE_URL)"
    )
    return parser


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """The database URL: ``DATABASE_URL``, or an embedded server stopped on the way out."""
    if settings.database_url:
        yield settings.database_url
        return
    if settings.env is Environment.PRODUCTION:  # Settings refuses this already; keep it explicit
        raise ConfigurationError("DASHTAM_ENV=production needs DATABASE_URL")
    server = EmbeddedPostgres(settings.data_dir / "pgdata")
    print(f"dashtam: starting embedded PostgreSQL in {server.data_dir}", file=sys.stderr)
    server.start()
    try:
        server.ensure_database(_DATABASE_NAME)
        yield server.url(_DATABASE_NAME)
    finally:
        if server.started_here:
            print("dashtam: stopping embedded PostgreSQL", file=sys.stderr)
            server.stop()


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from dashtam.migrate import upgrade_to_head

    with _database(settings) as url:
        os.environ["DATABASE_URL"] = url
        upgrade_to_head(url)
        # Already migrated: workers need not repeat it.
        os.environ["DASHTAM_MIGRATE_ON_START"] = "false"
        get_settings.cache_clear()
        uvicorn.run(
            "dashtam.main:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="info",
        )


def _migrate(settings: Settings) -> None:
    from dashtam.migrate import upgrade_to_head

    with _database(settings) as url:
        upgrade_to_head(url)
    print("dashtam: database is at the newest migration", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        # Reads the environment; in development also creates .dashtam/dev-secrets.json once.
        settings = get_settings()
        if args.command == "serve":
            _serve(args, settings)
        else:
            _migrate(settings)
    except (ConfigurationError, EmbeddedPostgresError) as exc:
        print(f"dashtam: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
