"""Re-encrypt everything sealed at rest under the keyring's current key.

Sealed columns: ``provider_tokens`` (access and refresh token, one ``key_id`` per row) and
``authorization_states.code_verifier_encrypted``. Rows are visited in primary-key order, in
batches; each batch is one transaction that locks its rows (a concurrent refresh waits, then
writes under the current key anyway). Once the report says nothing is left under an old key,
that key can be removed from ``DASHTAM_ENCRYPTION_KEYS``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashtam.core.crypto import DecryptionError, Keyring, Sealed
from dashtam.models import AuthorizationState, ProviderToken
from dashtam.services.token_vault import token_aad


class KeyRotationError(RuntimeError):
    """A sealed value that the keyring cannot open (the message names the key id, not keys)."""


@dataclass
class RotationReport:
    """What ``rotate_keys`` did; ``remaining`` counts values still under other keys."""

    current_key_id: str
    tokens_resealed: int = 0
    states_resealed: int = 0
    batches: int = 0
    from_keys: Counter[str] = field(default_factory=Counter)
    remaining: int = 0


def _verifier_aad(state_id: uuid.UUID) -> bytes:
    return f"authorization-state:{state_id}".encode()


def _reseal(keyring: Keyring, key_id: str, ciphertext: bytes, aad: bytes, what: str) -> bytes:
    try:
        sealed = keyring.reseal(Sealed(key_id, ciphertext), aad=aad)
    except DecryptionError as exc:
        raise KeyRotationError(
            f"cannot re-encrypt {what}: {exc}; keep key {key_id!r} in DASHTAM_ENCRYPTION_KEYS "
            "until rotation has finished"
        ) from None
    return sealed.ciphertext


async def _rotate_token_batch(
    *, session: AsyncSession, keyring: Keyring, after: uuid.UUID | None, batch_size: int
) -> tuple[uuid.UUID | None, int]:
    query = (
        select(ProviderToken)
        .where(ProviderToken.key_id != keyring.current_key_id)
        .order_by(ProviderToken.id)
        .limit(batch_size)
        .with_for_update()
    )
    if after is not None:
        query = query.where(ProviderToken.id > after)
    tokens = list(await session.scalars(query))
    for token in tokens:
        old = token.key_id
        what = f"provider token {token.id}"
        token.access_token_encrypted = _reseal(
            keyring,
            old,
            token.access_token_encrypted,
            token_aad(token.connection_id, "access"),
            what,
        )
        if token.refresh_token_encrypted is not None:
            token.refresh_token_encrypted = _reseal(
                keyring,
                old,
                token.refresh_token_encrypted,
                token_aad(token.connection_id, "refresh"),
                what,
            )
        token.key_id = keyring.current_key_id
    await session.commit()
    return (tokens[-1].id if tokens else None), len(tokens)


async def _rotate_state_batch(
    *, session: AsyncSession, keyring: Keyring, after: uuid.UUID | None, batch_size: int
) -> tuple[uuid.UUID | None, int]:
    query = (
        select(AuthorizationState)
        .where(
            AuthorizationState.code_verifier_encrypted.is_not(None),
            AuthorizationState.key_id != keyring.current_key_id,
        )
        .order_by(AuthorizationState.id)
        .limit(batch_size)
        .with_for_update()
    )
    if after is not None:
        query = query.where(AuthorizationState.id > after)
    states = list(await session.scalars(query))
    for state in states:
        assert state.code_verifier_encrypted is not None
        assert state.key_id is not None
        state.code_verifier_encrypted = _reseal(
            keyring,
            state.key_id,
            state.code_verifier_encrypted,
            _verifier_aad(state.id),
            f"authorization state {state.id}",
        )
        state.key_id = keyring.current_key_id
    await session.commit()
    return (states[-1].id if states else None), len(states)


async def count_not_current(*, session: AsyncSession, keyring: Keyring) -> Counter[str]:
    """How many sealed rows each non-current key id still holds."""
    counts: Counter[str] = Counter()
    for key_id, number in await session.execute(
        select(ProviderToken.key_id, func.count())
        .where(ProviderToken.key_id != keyring.current_key_id)
        .group_by(ProviderToken.key_id)
    ):
        counts[key_id] += number
    for state_key_id, number in await session.execute(
        select(AuthorizationState.key_id, func.count())
        .where(
            AuthorizationState.code_verifier_encrypted.is_not(None),
            AuthorizationState.key_id != keyring.current_key_id,
        )
        .group_by(AuthorizationState.key_id)
    ):
        counts[str(state_key_id)] += number
    await session.commit()
    return counts


async def rotate_keys(
    *, session: AsyncSession, keyring: Keyring, batch_size: int = 500
) -> RotationReport:
    """Re-encrypt every sealed value under ``keyring.current_key_id``, one transaction a batch."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = RotationReport(current_key_id=keyring.current_key_id)
    report.from_keys = await count_not_current(session=session, keyring=keyring)
    for rotate_batch, counter in (
        (_rotate_token_batch, "tokens_resealed"),
        (_rotate_state_batch, "states_resealed"),
    ):
        after: uuid.UUID | None = None
        while True:
            after, done = await rotate_batch(
                session=session, keyring=keyring, after=after, batch_size=batch_size
            )
            if done == 0:
                break
            report.batches += 1
            setattr(report, counter, getattr(report, counter) + done)
    report.remaining = sum((await count_not_current(session=session, keyring=keyring)).values())
    return report
