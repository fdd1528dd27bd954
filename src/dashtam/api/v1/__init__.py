"""Version 1 of the API, under ``/api/v1``.

``ROUTERS`` are included into the app one by one (``include``), not through a parent router:
FastAPI matches a request against every route of every router before the one that serves it,
once more for each level of nesting, so the routers read most come first and none is nested.
"""

from fastapi import APIRouter, FastAPI

from dashtam.api.v1 import (
    accounts,
    audit_logs,
    auth,
    authorization,
    provider_types,
    providers,
    syncs,
    tokens,
)

PREFIX = "/api/v1"
ROUTERS: tuple[APIRouter, ...] = (
    providers.router,
    accounts.router,
    auth.router,
    syncs.router,
    authorization.router,
    tokens.router,
    audit_logs.router,
    provider_types.router,
)


def include(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX)


__all__ = ["PREFIX", "ROUTERS", "include"]
