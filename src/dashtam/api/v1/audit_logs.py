"""``/providers/{id}/audit-logs``: what happened to a provider's connection."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from dashtam.api.deps import ReaderDep
from dashtam.api.v1.pagination import PageParam, SizeParam
from dashtam.schemas.audit import AuditLogsPublic
from dashtam.services import audit as audit_service

router = APIRouter(prefix="/providers/{provider_id}/audit-logs", tags=["audit"])


@router.get("")
async def list_audit_logs(
    reader: ReaderDep,
    provider_id: uuid.UUID,
    page: PageParam = 1,
    size: SizeParam = 50,
) -> AuditLogsPublic:
    return await audit_service.list_audit_logs(
        reader=reader,
        provider_id=provider_id,
        page=page,
        size=size,
    )
