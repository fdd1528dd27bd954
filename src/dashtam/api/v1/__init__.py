"""Version 1 of the API, under ``/api/v1``."""

from fastapi import APIRouter

from dashtam.api.v1 import audit_logs, auth, authorization, provider_types, providers, tokens

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(auth.router)
api_router.include_router(provider_types.router)
api_router.include_router(providers.router)
api_router.include_router(authorization.router)
api_router.include_router(tokens.router)
api_router.include_router(audit_logs.router)

__all__ = ["api_router"]
