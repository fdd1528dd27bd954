"""``dashtam rotate-key`` re-encrypts everything under the new key; the old key can then go."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from dashtam.api.deps import current_settings
from dashtam.cli import rotate_key
from dashtam.core.config import Settings, get_settings, new_encryption_key
from dashtam.core.crypto import DecryptionError, Keyring, Sealed
from dashtam.main import app
from tests.support.database import libpq_url
from tests.support.flows import register_connect


def _sealed_values(sync_url: str) -> dict[str, tuple[Sealed, bytes]]:
    """Every sealed value in the database, by a readable name, with its AAD."""
    values: dict[str, tuple[Sealed, bytes]] = {}
    with psycopg.connect(libpq_url(sync_url)) as conn:
        tokens = conn.execute(
            "SELECT connection_id, key_id, access_token_encrypted, refresh_token_encrypted"
            " FROM provider_tokens"
        )
        for connection_id, key_id, access, refresh in tokens:
            prefix = f"provider-token:{connection_id}"
            values[f"{prefix}:access"] = (Sealed(key_id, access), f"{prefix}:access".encode())
            values[f"{prefix}:refresh"] = (Sealed(key_id, refresh), f"{prefix}:refresh".encode())
        states = conn.execute(
            "SELECT id, key_id, code_verifier_encrypted FROM authorization_states"
            " WHERE code_verifier_encrypted IS NOT NULL"
        )
        for state_id, key_id, verifier in states:
            aad = f"authorization-state:{state_id}".encode()
            values[f"state:{state_id}"] = (Sealed(key_id, bytes(verifier)), aad)
    return values


def _open_all(values: dict[str, tuple[Sealed, bytes]], keyring: Keyring) -> dict[str, bytes]:
    return {name: keyring.decrypt(sealed, aad=aad) for name, (sealed, aad) in values.items()}


@pytest.fixture
def settings_override() -> Iterator[dict[str, Settings]]:
    """Put settings in here to make the app use them instead of the environment's."""
    chosen: dict[str, Settings] = {}
    app.dependency_overrides[current_settings] = lambda: chosen.get("settings", get_settings())
    yield chosen
    app.dependency_overrides.pop(current_settings, None)


@pytest.mark.pg_isolation("database")
async def test_rotate_key_reencrypts_everything_and_the_old_key_can_be_retired(
    async_client: httpx.AsyncClient, pg_database: Any, settings_override: dict[str, Settings]
) -> None:
    first = await register_connect(async_client)
    second = await register_connect(async_client)
    # A pending authorization: its PKCE verifier is sealed too.
    pending = await async_client.post(
        f"/api/v1/providers/{second.provider_id}/authorization", headers=second.headers
    )
    assert pending.status_code == 201
    old_spec = get_settings().keyring_spec
    old_keyring = Keyring.parse(old_spec)
    before = _sealed_values(pg_database.sync_url)
    assert len(before) >= 6  # two token rows (access + refresh) and at least two verifiers
    plaintexts = _open_all(before, old_keyring)

    new_key = f"rotated:{new_encryption_key()}"
    rotating = get_settings().model_copy(update={"encryption_keys": f"{new_key},{old_spec}"})
    report = await rotate_key(rotating, batch_size=1)

    assert report.remaining == 0
    assert report.tokens_resealed == 2
    assert report.batches == len(before) - 2  # one row per batch, each its own transaction
    after = _sealed_values(pg_database.sync_url)
    assert {sealed.key_id for sealed, _ in after.values()} == {"rotated"}
    # The old key is retired: the new key alone opens every value, to the same plaintext.
    retired = Keyring.parse(new_key)
    assert _open_all(after, retired) == plaintexts
    with pytest.raises(DecryptionError):
        _open_all(after, old_keyring)

    # And the service, running with only the new key, still refreshes and reports status.
    settings_override["settings"] = get_settings().model_copy(update={"encryption_keys": new_key})
    for connected in (first, second):
        refreshed = await async_client.post(
            f"/api/v1/providers/{connected.provider_id}/token-refreshes",
            headers=connected.headers,
        )
        assert refreshed.status_code == 201, refreshed.text
    assert await rotate_key(settings_override["settings"]) == type(report)(
        current_key_id="rotated"
    )  # nothing left to do
