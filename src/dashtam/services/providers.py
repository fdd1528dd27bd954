"""A user's providers: create, list, get, rename, delete. Others' providers do not exist."""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import contains_eager

from dashtam.core.config import Settings
from dashtam.core.errors import ConflictError, NotFoundError, UnprocessableError
from dashtam.models import Provider, ProviderConnection
from dashtam.providers import PROVIDER_TYPES, ProviderType
from dashtam.schemas.providers import (
    ProviderCreate,
    ProviderPublic,
    ProvidersPublic,
    ProviderUpdate,
)
from dashtam.services.context import UserRef
from dashtam.services.paging import paged
from dashtam.services.reads import Reader, as_dicts, for_caller


def list_provider_types() -> list[ProviderType]:
    return list(PROVIDER_TYPES.values())


def provider_not_found(provider_id: uuid.UUID) -> NotFoundError:
    return NotFoundError(f"Provider {provider_id} was not found.")


_ALIAS_CONSTRAINT = "uq_providers_user_id_alias"


def _alias_taken(alias: str) -> ConflictError:
    return ConflictError(f"You already have a provider named {alias!r}.", field="alias")


def _conflict(exc: IntegrityError, alias: str) -> ConflictError:
    """Alias taken only when that is the constraint violated; any other conflict says so."""
    constraint = getattr(exc.orig, "constraint_name", None) or getattr(
        getattr(exc.orig, "__cause__", None), "constraint_name", None
    )
    if constraint == _ALIAS_CONSTRAINT:
        return _alias_taken(alias)
    return ConflictError(
        "The provider could not be saved: it conflicts with a change made meanwhile "
        "(for example to the account). Reload and retry."
    )


async def create_provider(
    *, session: AsyncSession, user: UserRef, data: ProviderCreate
) -> Provider:
    if data.provider_key not in PROVIDER_TYPES:
        raise UnprocessableError(
            f"Unknown provider type; known: {', '.join(sorted(PROVIDER_TYPES))}.",
            errors=[
                {
                    "loc": ["body", "provider_key"],
                    "msg": "unknown provider type",
                    "type": "value_error",
                }
            ],
        )
    provider = Provider(user_id=user.id, provider_key=data.provider_key, alias=data.alias)
    provider.connection = ProviderConnection()
    session.add(provider)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise _conflict(exc, data.alias) from None
    return await get_provider(session=session, user=user, provider_id=provider.id)


# One-to-one, always present: the connection is joined into the provider's own row, no
# second query. Built once (paging.py says why).
_WITH_CONNECTION = (
    select(Provider).join(Provider.connection).options(contains_eager(Provider.connection))
)
# What a reader sees of a provider (``ProviderPublic``), as Core columns: reads that show
# only this build it from rows, without an ORM object in between.
_PUBLIC = select(
    Provider.id,
    Provider.provider_key,
    Provider.alias,
    ProviderConnection.status,
    Provider.created_at,
    Provider.updated_at,
).join(Provider.connection)
_PUBLIC_PAGE = for_caller(
    paged(
        _PUBLIC.where(Provider.user_id == bindparam("user_id")).order_by(
            Provider.created_at, Provider.id
        )
    )
)
_PUBLIC_ONE = for_caller(
    _PUBLIC.where(Provider.id == bindparam("provider_id"), Provider.user_id == bindparam("user_id"))
)
# The provider's id, when it is the user's: reads of a provider's rows go through it.
OWNED_PROVIDER = select(Provider.id).where(
    Provider.id == bindparam("provider_id"), Provider.user_id == bindparam("user_id")
)
_ONE = _WITH_CONNECTION.where(
    Provider.id == bindparam("provider_id"), Provider.user_id == bindparam("user_id")
).execution_options(populate_existing=True)
_ONE_WITH_TOKEN = _ONE.outerjoin(ProviderConnection.token).options(
    contains_eager(Provider.connection).contains_eager(ProviderConnection.token)
)


async def list_providers(*, reader: Reader, page: int, size: int) -> ProvidersPublic:
    """A page of the user's providers with their connections' status, and how many there are."""
    rows, total = await reader.page(_PUBLIC_PAGE, None, page=page, size=size)
    return ProvidersPublic.model_validate(
        {"items": as_dicts(rows), "total": total, "page": page, "size": size}
    )


async def show_provider(*, reader: Reader, provider_id: uuid.UUID) -> ProviderPublic:
    """What the user sees of their provider; else 404."""
    rows = await reader.rows(_PUBLIC_ONE, {"provider_id": provider_id})
    if not rows:
        raise provider_not_found(provider_id)
    return ProviderPublic.model_validate(as_dicts(rows)[0])


async def require_provider(
    *, connection: AsyncConnection, user: UserRef, provider_id: uuid.UUID
) -> None:
    """404 unless the provider is the user's."""
    found = await connection.scalar(
        OWNED_PROVIDER, {"provider_id": provider_id, "user_id": user.id}
    )
    if found is None:
        raise provider_not_found(provider_id)


async def get_provider(
    *, session: AsyncSession, user: UserRef, provider_id: uuid.UUID, with_token: bool = False
) -> Provider:
    """The user's provider with its connection loaded (and its token, if asked); else 404.

    One query: the connection and the token are joined into the provider's row.
    """
    provider: Provider | None = await session.scalar(
        _ONE_WITH_TOKEN if with_token else _ONE,
        {"provider_id": provider_id, "user_id": user.id},
    )
    if provider is None:
        raise provider_not_found(provider_id)
    return provider


async def lock_connection(*, session: AsyncSession, user: UserRef, provider_id: uuid.UUID) -> None:
    """Lock the provider's connection row until the caller's transaction ends; else 404."""
    locked = await session.scalar(
        select(ProviderConnection.id)
        .join(Provider, Provider.id == ProviderConnection.provider_id)
        .where(Provider.id == provider_id, Provider.user_id == user.id)
        .with_for_update(of=ProviderConnection)
    )
    if locked is None:
        raise provider_not_found(provider_id)


async def rename_provider(
    *, session: AsyncSession, user: UserRef, provider_id: uuid.UUID, data: ProviderUpdate
) -> Provider:
    provider = await get_provider(session=session, user=user, provider_id=provider_id)
    provider.alias = data.alias
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise _conflict(exc, data.alias) from None
    return await get_provider(session=session, user=user, provider_id=provider_id)


async def delete_provider(*, session: AsyncSession, user: UserRef, provider_id: uuid.UUID) -> None:
    provider = await get_provider(session=session, user=user, provider_id=provider_id)
    await session.delete(provider)
    await session.commit()


def provider_type_configured(provider_type: ProviderType, settings: Settings) -> bool:
    return provider_type.is_configured(settings)
