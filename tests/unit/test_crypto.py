"""AES-GCM keyring: round trip, tamper detection, rotation."""

from __future__ import annotations

import pytest

from dashtam.core.config import new_encryption_key
from dashtam.core.crypto import DecryptionError, Keyring, KeyringError, Sealed


def test_round_trip_and_no_plaintext_in_ciphertext() -> None:
    keyring = Keyring.parse(f"k1:{new_encryption_key()}")
    sealed = keyring.encrypt_text("secret-token", aad="row-1")
    assert sealed.key_id == "k1"
    assert b"secret-token" not in sealed.ciphertext
    assert keyring.decrypt_text(sealed, aad="row-1") == "secret-token"
    # A fresh nonce each time: equal plaintexts give different ciphertexts.
    assert keyring.encrypt_text("secret-token", aad="row-1").ciphertext != sealed.ciphertext


def test_wrong_aad_or_tampering_fails() -> None:
    keyring = Keyring.parse(f"k1:{new_encryption_key()}")
    sealed = keyring.encrypt_text("secret-token", aad="row-1")
    with pytest.raises(DecryptionError):
        keyring.decrypt_text(sealed, aad="row-2")
    flipped = bytearray(sealed.ciphertext)
    flipped[-1] ^= 1
    with pytest.raises(DecryptionError):
        keyring.decrypt_text(Sealed("k1", bytes(flipped)), aad="row-1")


def test_rotation_new_key_encrypts_old_key_still_decrypts() -> None:
    old, new = new_encryption_key(), new_encryption_key()
    before = Keyring.parse(f"k1:{old}")
    sealed = before.encrypt_text("secret-token", aad="row-1")

    after = Keyring.parse(f"k2:{new},k1:{old}")
    assert after.current_key_id == "k2"
    assert after.decrypt_text(sealed, aad="row-1") == "secret-token"
    resealed = after.reseal(sealed, aad=b"row-1")
    assert resealed.key_id == "k2"
    assert after.decrypt_text(resealed, aad="row-1") == "secret-token"

    # Once k1 is retired, only the resealed value opens.
    retired = Keyring.parse(f"k2:{new}")
    assert retired.decrypt_text(resealed, aad="row-1") == "secret-token"
    with pytest.raises(DecryptionError, match="no key 'k1'"):
        retired.decrypt_text(sealed, aad="row-1")


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "k1",
        "k1:not base64!",
        "k1:" + "QUJD",
        f"k1:{new_encryption_key()},k1:{new_encryption_key()}",
    ],
    # Fixed ids: the keys are random, and xdist workers must collect the same test names.
    ids=["empty", "no-key", "not-base64", "too-short", "duplicate-key-id"],
)
def test_bad_keyrings_are_refused_without_echoing_keys(spec: str) -> None:
    with pytest.raises(KeyringError) as info:
        Keyring.parse(spec)
    assert "DASHTAM_ENCRYPTION_KEYS" in str(info.value) or "key" in str(info.value)
    for part in spec.split(","):
        secret = part.partition(":")[2]
        if len(secret) > 8:
            assert secret not in str(info.value)
