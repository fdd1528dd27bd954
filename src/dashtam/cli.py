"""The ``dashtam`` command: ``serve``, ``worker``, ``migrate``, ``rotate-key`` and ``purge``.

``dashtam serve`` without ``DATABASE_URL`` starts an embedded PostgreSQL whose data lives in
``./.dashtam/`` (kept across restarts), applies the migrations, and serves on
http://127.0.0.1:8000 until Ctrl-C or SIGTERM, then stops that PostgreSQL again;
``--worker`` also runs a job worker beside the API on the same database. ``dashtam worker``
runs a worker alone (syncs, token refreshes, purges), as many as wanted, on any machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from dashtam.core.config import ConfigurationError, Environment, Settings, get_settings
from dashtam.core.embedded import EmbeddedPostgres, EmbeddedPostgresError

if TYPE_CHECKING:
    from dashtam.services.key_rotation import RotationReport

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
    serve.add_argument(
        "--worker",
        action="store_true",
        help="also run a job worker (syncs, token refreshes, purges) until the API stops",
    )
    worker = commands.add_parser(
        "worker", help="run a job worker: syncs, token refreshes, purges (DATABASE_URL)"
    )
    worker.add_argument("--concurrency", type=int, default=2, help="jobs this worker runs at once")
    worker.add_argument(
        "--once", action="store_true", help="run the jobs that are due now, then stop"
    )
    commands.add_parser(
        "migrate", help="apply the database migrations (embedded if no DATABASE_URL)"
    )
    rotate = commands.add_parser(
        "rotate-key",
        help="re-encrypt every stored token under the first key of DASHTAM_ENCRYPTION_KEYS",
        description=(
            "Put the new key first in DASHTAM_ENCRYPTION_KEYS (new:...,old:...), run this, then "
            "remove the old key once it reports nothing left under it."
        ),
    )
    rotate.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    commands.add_parser(
        "purge",
        help="delete expired sandbox grants, authorization states, login tokens and counters",
    )
    return parser


async def rotate_key(settings: Settings, *, batch_size: int = 500) -> RotationReport:
    """Re-encrypt all sealed values under ``settings``' current key (one transaction a batch).

    Example (what ``dashtam rotate-key`` runs)::

        report = await rotate_key(get_settings(), batch_size=500)
        assert report.remaining == 0  # the old key can now be retired
    """
    from dashtam.core import db
    from dashtam.core.crypto import Keyring
    from dashtam.services.key_rotation import rotate_keys

    keyring = Keyring.parse(settings.keyring_spec)
    async with db.SessionLocal() as session:
        return await rotate_keys(session=session, keyring=keyring, batch_size=batch_size)


def _rotate_key(args: argparse.Namespace, settings: Settings) -> None:
    import asyncio

    from dashtam.core.crypto import KeyringError
    from dashtam.services.key_rotation import KeyRotationError

    async def run(current: Settings) -> RotationReport:
        from dashtam.core import db

        try:
            return await rotate_key(current, batch_size=args.batch_size)
        finally:
            await db.engine.dispose()

    with _database(settings) as url:
        os.environ["DATABASE_URL"] = url
        get_settings.cache_clear()
        try:
            report = asyncio.run(run(get_settings()))
        except (KeyringError, KeyRotationError) as exc:
            raise ConfigurationError(str(exc)) from None
    moved = ", ".join(f"{kid}: {n}" for kid, n in sorted(report.from_keys.items())) or "none"
    print(
        f"dashtam: re-encrypted {report.tokens_resealed} token row(s) and "
        f"{report.states_resealed} authorization state(s) under key "
        f"{report.current_key_id!r} in {report.batches} batch(es); were under {moved}; "
        f"{report.remaining} left under other keys",
        file=sys.stderr,
    )
    if report.remaining:
        raise ConfigurationError("some values are still under old keys: run rotate-key again")


def _purge(settings: Settings) -> None:
    import asyncio
    from dataclasses import asdict

    from dashtam.services.purge import PurgeReport

    async def run(current: Settings) -> PurgeReport:
        from dashtam.core import db
        from dashtam.services.purge import purge_expired

        try:
            async with db.SessionLocal() as session:
                return await purge_expired(session=session, settings=current)
        finally:
            await db.engine.dispose()

    with _database(settings) as url:
        os.environ["DATABASE_URL"] = url
        get_settings.cache_clear()
        report = asyncio.run(run(get_settings()))
    print(
        "dashtam: purged "
        + ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in asdict(report).items()),
        file=sys.stderr,
    )


def _worker(args: argparse.Namespace, settings: Settings) -> None:
    import asyncio

    from dashtam.core.config import to_libpq_url

    async def run() -> None:
        from dashtam.core import db
        from dashtam.jobs.worker import run_worker

        try:
            await run_worker(to_libpq_url(url), concurrency=args.concurrency, wait=not args.once)
        finally:
            await db.engine.dispose()

    with _database(settings) as url:
        os.environ["DATABASE_URL"] = url
        get_settings.cache_clear()
        print("dashtam: job worker started", file=sys.stderr)
        asyncio.run(run())


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
        if settings.env is not Environment.PRODUCTION:
            # Development: OAuth redirects come back to the address served here, unless set.
            os.environ.setdefault("DASHTAM_PUBLIC_URL", f"http://{args.host}:{args.port}")
        get_settings.cache_clear()
        with _worker_beside(args.worker):
            uvicorn.run(
                "dashtam.main:app",
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_level="info",
            )


@contextmanager
def _worker_beside(wanted: bool) -> Iterator[None]:
    """A ``dashtam worker`` process on this environment's database while the block runs."""
    if not wanted:
        yield
        return
    import subprocess

    worker = subprocess.Popen([sys.executable, "-m", "dashtam.cli", "worker"])
    try:
        yield
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


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
        elif args.command == "worker":
            _worker(args, settings)
        elif args.command == "rotate-key":
            _rotate_key(args, settings)
        elif args.command == "purge":
            _purge(settings)
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
