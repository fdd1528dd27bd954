"""``/sandbox/api``: the built-in sandbox's brokerage API (not under ``/api/v1``).

Authenticated by the access tokens the sandbox's OAuth server issued; what Dashtam's sync
reads when a user connects the ``sandbox`` provider.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header

from dashtam.api.deps import SessionDep
from dashtam.services import sandbox_brokerage

router = APIRouter(prefix="/sandbox/api", tags=["sandbox"])

AuthorizationHeader = Annotated[str | None, Header(max_length=4096)]


@router.get("/accounts")
async def list_accounts(session: SessionDep, authorization: AuthorizationHeader = None) -> Any:
    family_id = await sandbox_brokerage.authenticate(session=session, authorization=authorization)
    return sandbox_brokerage.accounts(family_id)


@router.get("/accounts/{account_id}/transactions")
async def list_transactions(
    session: SessionDep,
    account_id: str,
    authorization: AuthorizationHeader = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Any:
    family_id = await sandbox_brokerage.authenticate(session=session, authorization=authorization)
    return sandbox_brokerage.transactions(family_id, account_id, start=start, end=end)
