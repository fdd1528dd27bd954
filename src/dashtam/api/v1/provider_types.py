"""``/provider-types``: what can be connected."""

from __future__ import annotations

from fastapi import APIRouter

from dashtam.api.deps import SettingsDep
from dashtam.schemas.providers import ProviderTypePublic, ProviderTypesPublic
from dashtam.services import providers as provider_service

router = APIRouter(prefix="/provider-types", tags=["provider types"])


@router.get("")
async def list_provider_types(settings: SettingsDep) -> ProviderTypesPublic:
    return ProviderTypesPublic(
        items=[
            ProviderTypePublic(
                key=t.key,
                name=t.name,
                auth_type="oauth2",
                supports_pkce=t.supports_pkce,
                configured=t.is_configured(settings),
            )
            for t in provider_service.list_provider_types()
        ]
    )
