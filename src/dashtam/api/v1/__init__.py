"""Version 1 of the API, under ``/api/v1``."""

from fastapi import APIRouter

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

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(auth.router)
api_router.include_router(provider_types.router)
api_router.include_router(providers.router)
api_router.include_router(authorization.router)
api_router.include_router(tokens.router)
api_router.include_router(audit_logs.router)
api_router.include_router(syncs.router)
api_router.include_router(accounts.router)

__all__ = ["api_router"]
