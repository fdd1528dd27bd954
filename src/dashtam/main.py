"""The ASGI application: ``create_app()`` and the module-level ``app``.

Run it with ``dashtam serve`` (which also provides a database in development) or any ASGI
server: ``uvicorn dashtam.main:app``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from dashtam import __version__
from dashtam.api import v1
from dashtam.api.body_limit import BodySizeLimit
from dashtam.api.health import router as health_router
from dashtam.api.openapi import install_problem_openapi
from dashtam.api.sandbox import router as sandbox_router
from dashtam.api.sandbox_brokerage import router as sandbox_brokerage_router
from dashtam.api.security_headers import SecurityHeaders
from dashtam.core import db, log_redaction
from dashtam.core.config import Environment, get_settings
from dashtam.core.errors import install_problem_handlers

_log = logging.getLogger("dashtam")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    if (
        settings.env is Environment.DEVELOPMENT
        and settings.migrate_on_start
        and settings.database_url
    ):
        from dashtam.migrate import upgrade_to_head

        # Alembic runs its own event loop: give it a thread.
        await asyncio.to_thread(upgrade_to_head, settings.database_url)
    # What start-up built (modules, the app, SQLAlchemy's and pydantic's schemas: some 120,000
    # objects) lives as long as the process. Out of the collector's way, a full collection
    # walks only what requests left behind, instead of stalling every request in flight for
    # 100 ms while it walks them all.
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        # Pooled connections belong to this loop; the next start may run on another one.
        await db.engine.dispose()


def create_app() -> FastAPI:
    settings = get_settings()
    log_redaction.install()
    docs = settings.docs_are_enabled
    app = FastAPI(
        title="Dashtam",
        version=__version__,
        summary="Connect brokerage providers over OAuth 2.0; tokens encrypted, refreshed, audited.",
        lifespan=_lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    install_problem_handlers(app)
    install_problem_openapi(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(SecurityHeaders, https=settings.public_url.startswith("https://"))
    v1.include(app)
    app.include_router(health_router)
    app.state.provider_transports = {}
    if settings.sandbox_is_enabled:
        app.include_router(sandbox_router)
        app.include_router(sandbox_brokerage_router)
        # The sandbox is reached in-process (real HTTP semantics, no socket needed).
        app.state.provider_transports["sandbox"] = httpx.ASGITransport(
            app=app, raise_app_exceptions=False
        )
    _log.debug(
        "Dashtam app created (env=%s, sandbox=%s, docs=%s)",
        settings.env.value,
        "sandbox" in app.state.provider_transports,
        docs,
    )
    return app


app = create_app()
