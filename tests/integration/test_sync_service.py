"""The sync and refresh services called as the job worker calls them, on their odd paths."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core.clock import shifted
from dashtam.core.config import get_settings
from dashtam.main import app
from dashtam.models import Provider, ProviderToken, Sync, SyncStatus
from dashtam.services import scheduled_refresh
from dashtam.services import sync as sync_service
from dashtam.services.context import http_clients
from tests.support.flows import Connected, register_connect


@pytest.fixture(autouse=True)
def _syncs_left_to_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "sync_in_api", False)


async def _queued(http: httpx.AsyncClient) -> tuple[Connected, uuid.UUID]:
    user = await register_connect(http)
    started = await http.post(f"/api/v1/providers/{user.provider_id}/syncs", headers=user.headers)
    assert started.status_code == 202
    return user, uuid.UUID(started.json()["id"])


async def _run(provider_id: str) -> uuid.UUID | None:
    settings = get_settings()
    return await sync_service.run_next_sync(
        provider_id=uuid.UUID(provider_id),
        settings=settings,
        http=http_clients(app.state.provider_transports),
        base_url=settings.public_url,
    )


async def _outcome(session: AsyncSession, sync_id: uuid.UUID) -> tuple[SyncStatus, str | None]:
    sync = await session.get(Sync, sync_id, populate_existing=True)
    assert sync is not None
    return sync.status, sync.error


async def test_nothing_queued_means_nothing_to_run(async_client: httpx.AsyncClient) -> None:
    user = await register_connect(async_client)
    assert await _run(user.provider_id) is None


async def test_a_provider_disconnected_after_the_request_fails_its_sync(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    user, sync_id = await _queued(async_client)
    gone = await async_client.delete(
        f"/api/v1/providers/{user.provider_id}/authorization", headers=user.headers
    )
    assert gone.status_code == 204
    assert await _run(user.provider_id) == sync_id
    assert await _outcome(async_db, sync_id) == (
        SyncStatus.FAILED,
        "the provider is not connected: authorize it again",
    )


@pytest.mark.parametrize(
    ("spoil", "error"),
    [
        (
            update(ProviderToken).values(access_token_encrypted=b"\x00" * 40),
            "the stored token cannot be opened: authorize the provider again",
        ),
        (update(Provider).values(provider_key="retired"), "unknown provider type 'retired'"),
    ],
)
async def test_what_cannot_be_used_fails_the_sync_with_its_reason(
    async_client: httpx.AsyncClient, async_db: AsyncSession, spoil: Any, error: str
) -> None:
    user, sync_id = await _queued(async_client)
    await async_db.execute(spoil)
    await async_db.commit()
    await _run(user.provider_id)
    assert await _outcome(async_db, sync_id) == (SyncStatus.FAILED, error)


def _sandbox_api(transform: Callable[[httpx.Request, httpx.Response], httpx.Response]) -> Any:
    """The app's sandbox transport with its brokerage answers passed through ``transform``."""
    inner = app.state.provider_transports["sandbox"]

    class Transformed(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await inner.handle_async_request(request)
            if not request.url.path.startswith("/sandbox/api/"):
                return response
            await response.aread()
            return transform(request, response)

    return Transformed()


async def _run_with(provider_id: str, transport: httpx.AsyncBaseTransport) -> None:
    settings = get_settings()
    transports = dict(app.state.provider_transports, sandbox=transport)
    await sync_service.run_next_sync(
        provider_id=uuid.UUID(provider_id),
        settings=settings,
        http=http_clients(transports),
        base_url=settings.public_url,
    )


async def test_a_value_the_database_cannot_hold_fails_that_account_only(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    user, sync_id = await _queued(async_client)

    def huge_quantity(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if not request.url.path.endswith("/accounts"):
            return response
        body = response.json()
        body["accounts"][0]["positions"][0]["quantity"] = "1e30"
        return httpx.Response(200, json=body)

    await _run_with(user.provider_id, _sandbox_api(huge_quantity))
    status, error = await _outcome(async_db, sync_id)
    assert status is SyncStatus.FAILED
    assert error is not None
    assert error.endswith(": its data could not be stored")
    sync = await async_db.get(Sync, sync_id)
    assert sync is not None
    assert sync.accounts == 1  # the other account was stored


async def test_an_unexpected_failure_is_recorded_on_the_sync(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    user, sync_id = await _queued(async_client)

    def explode(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        raise RuntimeError("the reader broke")

    await _run_with(user.provider_id, _sandbox_api(explode))
    assert await _outcome(async_db, sync_id) == (
        SyncStatus.FAILED,
        "unexpected error (RuntimeError)",
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"accounts": {}}, "accounts: 'accounts' is not a list"),
        ({"nothing": []}, "accounts: field 'accounts' is missing"),
    ],
)
async def test_sandbox_answers_of_the_wrong_shape_fail_the_sync(
    async_client: httpx.AsyncClient, async_db: AsyncSession, body: Any, error: str
) -> None:
    user, sync_id = await _queued(async_client)

    def replace(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        return httpx.Response(200, json=body)

    await _run_with(user.provider_id, _sandbox_api(replace))
    assert await _outcome(async_db, sync_id) == (SyncStatus.FAILED, error)


async def test_the_schedule_skips_providers_with_a_sync_under_way(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    await _queued(async_client)
    other = await register_connect(async_client)
    queued = await sync_service.queue_due_syncs(session=async_db, settings=get_settings())
    assert queued == 1  # only the other provider
    syncs = (await async_db.scalars(select(Sync.provider_id))).all()
    assert syncs.count(uuid.UUID(other.provider_id)) == 1


async def test_a_stale_sync_is_abandoned_so_the_provider_can_sync_again(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    user, sync_id = await _queued(async_client)
    with shifted(timedelta(seconds=get_settings().sync_stale_seconds + 1)):
        again = await async_client.post(
            f"/api/v1/providers/{user.provider_id}/syncs", headers=user.headers
        )
    assert again.status_code == 202
    assert await _outcome(async_db, sync_id) == (
        SyncStatus.FAILED,
        "abandoned: the sync did not finish in time",
    )


async def test_scheduled_refreshes_queue_once_and_skip_what_cannot_be_refreshed(
    async_client: httpx.AsyncClient, async_db: AsyncSession
) -> None:
    user = await register_connect(async_client)
    settings = get_settings()
    with shifted(timedelta(seconds=settings.sandbox_access_token_seconds)):
        first = await scheduled_refresh.queue_due_refreshes(session=async_db, settings=settings)
        second = await scheduled_refresh.queue_due_refreshes(session=async_db, settings=settings)
    assert (first, second) == (1, 0)  # the waiting job's queueing lock
    refreshed = await scheduled_refresh.refresh_provider(
        provider_id=uuid.uuid4(),
        settings=settings,
        http=http_clients(app.state.provider_transports),
        base_url=settings.public_url,
    )
    assert refreshed is False
    gone = await async_client.delete(
        f"/api/v1/providers/{user.provider_id}/authorization", headers=user.headers
    )
    assert gone.status_code == 204
    disconnected = await scheduled_refresh.refresh_provider(
        provider_id=uuid.UUID(user.provider_id),
        settings=settings,
        http=http_clients(app.state.provider_transports),
        base_url=settings.public_url,
    )
    assert disconnected is False
