"""Syncs: reading a provider's accounts, positions and transactions into Dashtam.

A sync is a row (``queued`` -> ``running`` -> ``succeeded``/``failed``). At most one per
provider is queued or running at a time: a partial unique index says so, whoever asks (the
API, the periodic job), and a sync is claimed by one ``UPDATE`` before it runs, however many
processes try. Each account is stored in a transaction of its own, after all of its data was
read and checked: a provider that fails or sends data that cannot be trusted for one account
leaves that account as it was, and the other accounts' data is kept. The token is refreshed
first when it is about to expire, and once more if the provider refuses it. Every sync ends
in the audit log.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from dashtam.core import db
from dashtam.core.clock import utcnow
from dashtam.core.config import Settings
from dashtam.core.crypto import DecryptionError
from dashtam.core.errors import ConflictError, NotFoundError, ProblemError
from dashtam.models import (
    ACTIVE_SYNC_STATUSES,
    Account,
    BalanceSnapshot,
    ConnectionStatus,
    Position,
    Provider,
    ProviderConnection,
    ProviderToken,
    Sync,
    SyncStatus,
    Transaction,
    User,
)
from dashtam.providers import get_provider_type
from dashtam.providers.brokerage import (
    AccountData,
    BrokerageAuthError,
    BrokerageClient,
    BrokerageError,
    TransactionData,
    UnreadableAccount,
)
from dashtam.services import authorization
from dashtam.services.audit import AuditAction, record
from dashtam.services.context import HttpClientFactory, RequestContext, UserRef, keyring_for
from dashtam.services.job_queue import TaskName, enqueue_for_provider
from dashtam.services.providers import get_provider
from dashtam.services.token_vault import open_access_token

_log = logging.getLogger("dashtam.sync")
# Rows per INSERT: well below PostgreSQL's 65,535 bind parameters.
_BATCH = 1000
SYNC_USER_AGENT = "dashtam-sync"


class SyncFailed(Exception):
    """The sync cannot go on; ``reason`` is stored on the sync and safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _not_found(sync_id: uuid.UUID) -> NotFoundError:
    return NotFoundError(f"Sync {sync_id} was not found.")


async def _abandon_stale(session: AsyncSession, provider_id: uuid.UUID, settings: Settings) -> None:
    # A sync whose process died mid-way would otherwise block the provider for good.
    await session.execute(
        update(Sync)
        .where(
            Sync.provider_id == provider_id,
            Sync.status.in_(ACTIVE_SYNC_STATUSES),
            Sync.created_at < utcnow() - timedelta(seconds=settings.sync_stale_seconds),
        )
        .values(
            status=SyncStatus.FAILED,
            finished_at=utcnow(),
            error="abandoned: the sync did not finish in time",
        )
    )


async def _queue(
    session: AsyncSession, provider_id: uuid.UUID, *, trigger: str, settings: Settings
) -> Sync | None:
    """A new queued sync with its job, in the caller's transaction; None if one is active."""
    await _abandon_stale(session, provider_id, settings)
    sync = Sync(id=uuid.uuid4(), provider_id=provider_id, trigger=trigger, status=SyncStatus.QUEUED)
    try:
        async with session.begin_nested():
            session.add(sync)
    except IntegrityError:
        return None
    await enqueue_for_provider(
        session=session, task=TaskName.SYNC_PROVIDER, provider_id=provider_id
    )
    return sync


async def request_sync(
    *, session: AsyncSession, user: UserRef, provider_id: uuid.UUID, settings: Settings
) -> Sync:
    """Queue a sync of the user's provider (409 if it is not connected or one is active)."""
    provider = await get_provider(
        session=session, user=user, provider_id=provider_id, with_token=True
    )
    if (
        provider.connection.status is not ConnectionStatus.ACTIVE
        or provider.connection.token is None
    ):
        raise ConflictError("The provider is not connected: authorize it before syncing.")
    sync = await _queue(session, provider.id, trigger="api", settings=settings)
    if sync is None:
        active: uuid.UUID | None = await session.scalar(
            select(Sync.id).where(
                Sync.provider_id == provider.id, Sync.status.in_(ACTIVE_SYNC_STATUSES)
            )
        )
        await session.rollback()
        raise ConflictError(
            "A sync of this provider is already queued or running; wait for it to finish.",
            sync_id=str(active) if active else None,
        )
    await session.commit()
    return sync


async def get_sync(
    *, session: AsyncSession, user: UserRef, provider_id: uuid.UUID, sync_id: uuid.UUID
) -> Sync:
    sync = await session.scalar(
        select(Sync)
        .join(Provider, Provider.id == Sync.provider_id)
        .where(Sync.id == sync_id, Sync.provider_id == provider_id, Provider.user_id == user.id)
    )
    if sync is None:
        raise _not_found(sync_id)
    return sync


async def queue_due_syncs(*, session: AsyncSession, settings: Settings) -> int:
    """Queue a sync for every connected provider not synced within ``sync_every_seconds``."""
    last_sync = (
        select(func.max(Sync.created_at))
        .where(Sync.provider_id == Provider.id)
        .correlate(Provider)
        .scalar_subquery()
    )
    due = await session.scalars(
        select(Provider.id)
        .join(ProviderConnection, ProviderConnection.provider_id == Provider.id)
        .join(ProviderToken, ProviderToken.connection_id == ProviderConnection.id)
        .where(
            ProviderConnection.status == ConnectionStatus.ACTIVE,
            or_(
                last_sync.is_(None),
                last_sync < utcnow() - timedelta(seconds=settings.sync_every_seconds),
            ),
        )
    )
    queued = 0
    for provider_id in list(due):
        if await _queue(session, provider_id, trigger="schedule", settings=settings):
            queued += 1
    await session.commit()
    return queued


async def run_next_sync(
    *, provider_id: uuid.UUID, settings: Settings, http: HttpClientFactory, base_url: str
) -> uuid.UUID | None:
    """Claim the provider's queued sync and run it; None when there is none to run.

    Opens its own session (``db.SessionLocal()``): the API calls it after answering, the job
    queue's worker from a job.
    """
    session = db.SessionLocal()
    try:
        claimed: uuid.UUID | None = await session.scalar(
            update(Sync)
            .where(
                Sync.id
                == select(Sync.id)
                .where(Sync.provider_id == provider_id, Sync.status == SyncStatus.QUEUED)
                .limit(1)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            .values(status=SyncStatus.RUNNING, started_at=utcnow())
            .returning(Sync.id)
        )
        await session.commit()
        if claimed is None:
            return None
        await _Run(session, claimed, provider_id, settings, http, base_url).run()
        return claimed
    finally:
        await db.close_quietly(session)


class _Run:
    """One claimed sync, from its token to its audit row."""

    def __init__(
        self,
        session: AsyncSession,
        sync_id: uuid.UUID,
        provider_id: uuid.UUID,
        settings: Settings,
        http: HttpClientFactory,
        base_url: str,
    ) -> None:
        self.session = session
        self.sync_id = sync_id
        self.provider_id = provider_id
        self.settings = settings
        self.http = http
        self.context = RequestContext(
            ip_address=None, user_agent=SYNC_USER_AGENT, base_url=base_url
        )
        self.accounts = self.positions = self.transactions = 0
        self.errors: list[str] = []

    async def run(self) -> None:
        user_id: uuid.UUID | None = None
        try:
            provider = await self.session.scalar(
                select(Provider)
                .where(Provider.id == self.provider_id)
                .options(selectinload(Provider.connection).selectinload(ProviderConnection.token))
            )
            if provider is None:  # deleted meanwhile: its syncs went with it
                return
            user_id = provider.user_id
            await self._sync(provider)
        except SyncFailed as exc:
            self.errors.insert(0, exc.reason)
        except Exception as exc:  # recorded on the sync, never lost in a worker's log
            _log.exception("sync %s failed unexpectedly", self.sync_id)
            await self.session.rollback()
            self.errors.insert(0, f"unexpected error ({type(exc).__name__})")
        await self._finish(user_id)

    async def _sync(self, provider: Provider) -> None:
        provider_type = get_provider_type(provider.provider_key)
        if provider_type is None:
            raise SyncFailed(f"unknown provider type {provider.provider_key!r}")
        user = await self.session.get(User, provider.user_id)
        assert user is not None  # the provider row references it
        access_token = await self._access_token(user, force=False)
        async with self.http(provider.provider_key) as client:

            def reader(token: str) -> BrokerageClient:
                return provider_type.brokerage(client, token, self.settings, self.context.base_url)

            try:
                accounts = await reader(access_token).accounts()
            except BrokerageAuthError:
                # Refused before its expiry (revoked, rotated elsewhere): refresh once, retry.
                access_token = await self._access_token(user, force=True)
                try:
                    accounts = await reader(access_token).accounts()
                except BrokerageError as exc:
                    raise SyncFailed(exc.reason) from None
            except BrokerageError as exc:
                raise SyncFailed(exc.reason) from None
            for account in accounts:
                if isinstance(account, UnreadableAccount):
                    self.errors.append(account.reason)
                    continue
                await self._sync_account(reader(access_token), account)

    async def _access_token(self, user: User, *, force: bool) -> str:
        """The provider's access token, refreshed first when it is about to expire (or when
        ``force``: the provider refused it)."""
        provider = await get_provider(
            session=self.session, user=user, provider_id=self.provider_id, with_token=True
        )
        token = provider.connection.token
        if provider.connection.status is not ConnectionStatus.ACTIVE or token is None:
            raise SyncFailed("the provider is not connected: authorize it again")
        margin = timedelta(seconds=self.settings.refresh_margin_seconds)
        if force or (token.expires_at is not None and token.expires_at <= utcnow() + margin):
            try:
                await authorization.refresh_tokens(
                    session=self.session,
                    user=user,
                    provider_id=self.provider_id,
                    settings=self.settings,
                    http=self.http,
                    context=self.context,
                )
            except ProblemError as exc:
                await self.session.rollback()
                raise SyncFailed(f"the token could not be refreshed: {exc.detail}") from None
            # Once: a provider whose tokens live shorter than the margin is not refreshed again.
            provider = await get_provider(
                session=self.session, user=user, provider_id=self.provider_id, with_token=True
            )
            token = provider.connection.token
            if token is None:  # disconnected meanwhile
                raise SyncFailed("the provider is not connected: authorize it again")
        try:
            opened = open_access_token(token, keyring=keyring_for(self.settings))
        except DecryptionError:
            raise SyncFailed(
                "the stored token cannot be opened: authorize the provider again"
            ) from None
        # No transaction stays open across the provider's calls: its connection goes back to
        # the pool (the in-process sandbox needs one of its own to answer).
        await self.session.commit()
        return opened

    async def _sync_account(self, reader: BrokerageClient, account: AccountData) -> None:
        now = utcnow()
        try:
            since = await self._history_start(account, now)
            await self.session.commit()
            transactions = await reader.transactions(account, since=since, until=now)
            await _store_account(
                self.session, self.provider_id, self.sync_id, account, transactions, now
            )
            await self.session.commit()
        except BrokerageError as exc:
            await self.session.rollback()
            self.errors.append(f"account {account.number_masked}: {exc.reason}")
            return
        except DBAPIError as exc:
            if db.is_retryable(exc):
                raise
            await self.session.rollback()
            self.errors.append(f"account {account.number_masked}: its data could not be stored")
            return
        self.accounts += 1
        self.positions += len(account.positions)
        self.transactions += len(transactions)

    async def _history_start(self, account: AccountData, now: datetime) -> datetime:
        newest = await self.session.scalar(
            select(func.max(Transaction.posted_at))
            .join(Account, Account.id == Transaction.account_id)
            .where(
                Account.provider_id == self.provider_id,
                Account.provider_account_id == account.provider_account_id,
            )
        )
        if newest is None:
            return now - timedelta(days=self.settings.sync_history_days)
        # Providers post late and correct entries: re-read a few days (upserted, no duplicates).
        return newest - timedelta(days=self.settings.sync_overlap_days)

    async def _finish(self, user_id: uuid.UUID | None) -> None:
        error = "; ".join(self.errors)[:1000] or None
        status = SyncStatus.FAILED if error else SyncStatus.SUCCEEDED
        await self.session.execute(
            update(Sync)
            .where(Sync.id == self.sync_id)
            .values(
                status=status,
                finished_at=utcnow(),
                accounts=self.accounts,
                positions=self.positions,
                transactions=self.transactions,
                error=error,
            )
        )
        details: dict[str, Any] = {
            "outcome": "success" if error is None else "failure",
            "sync_id": str(self.sync_id),
            "accounts": self.accounts,
            "positions": self.positions,
            "transactions": self.transactions,
        }
        if error:
            details["error"] = error
        record(
            session=self.session,
            provider_id=self.provider_id,
            user_id=user_id,
            action=AuditAction.SYNC,
            context=self.context,
            **details,
        )
        await self.session.commit()


def _chunks(rows: Sequence[dict[str, Any]]) -> list[Sequence[dict[str, Any]]]:
    return [rows[start : start + _BATCH] for start in range(0, len(rows), _BATCH)]


async def _store_account(
    session: AsyncSession,
    provider_id: uuid.UUID,
    sync_id: uuid.UUID,
    account: AccountData,
    transactions: list[TransactionData],
    now: datetime,
) -> None:
    upsert = pg_insert(Account).values(
        id=uuid.uuid4(),
        provider_id=provider_id,
        provider_account_id=account.provider_account_id,
        name=account.name[:200],
        type=account.type[:50],
        currency=account.currency[:3],
        number_masked=account.number_masked[:32],
    )
    account_id = await session.scalar(
        upsert.on_conflict_do_update(
            index_elements=[Account.provider_id, Account.provider_account_id],
            set_={
                "name": upsert.excluded.name,
                "type": upsert.excluded.type,
                "currency": upsert.excluded.currency,
                "number_masked": upsert.excluded.number_masked,
                "updated_at": func.now(),
            },
        ).returning(Account.id)
    )
    await session.execute(delete(Position).where(Position.account_id == account_id))
    if account.positions:
        await session.execute(
            insert(Position),
            [
                {
                    "id": uuid.uuid4(),
                    "account_id": account_id,
                    "symbol": position.symbol[:64],
                    "quantity": position.quantity,
                    "cost_basis": position.cost_basis,
                    "market_value": position.market_value,
                    "currency": position.currency[:3],
                }
                for position in account.positions
            ],
        )
    # One row per provider id: an upsert may not touch a row twice.
    unique = {t.provider_transaction_id: t for t in transactions}
    rows = [
        {
            "id": uuid.uuid4(),
            "account_id": account_id,
            "provider_transaction_id": transaction.provider_transaction_id[:128],
            "posted_at": transaction.posted_at,
            "type": transaction.type.value,
            "amount": transaction.amount,
            "currency": transaction.currency[:3],
            "symbol": transaction.symbol,
            "description": transaction.description,
        }
        for transaction in unique.values()
    ]
    for chunk in _chunks(rows):
        statement = pg_insert(Transaction).values(list(chunk))
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[Transaction.account_id, Transaction.provider_transaction_id],
                set_={
                    name: statement.excluded[name]
                    for name in ("posted_at", "type", "amount", "currency", "symbol", "description")
                },
            )
        )
    session.add(
        BalanceSnapshot(
            account_id=account_id,
            sync_id=sync_id,
            cash=account.cash,
            market_value=account.market_value,
            total=account.total,
            currency=account.currency[:3],
            as_of=now,
        )
    )
