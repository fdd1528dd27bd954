"""Encryption at rest for provider tokens: AES-256-GCM with a keyring of named keys.

The first key in ``DASHTAM_ENCRYPTION_KEYS`` encrypts; every key decrypts. Each ciphertext is
stored with the id of the key that made it, so adding a new key in front rotates keys without
a flag day. Example::

    keyring = Keyring.parse("k2:" + new_key_b64 + ",k1:" + old_key_b64)
    sealed = keyring.encrypt(b"token", aad=b"provider-token:42:access")
    keyring.decrypt(sealed, aad=b"provider-token:42:access")  # b"token"
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12


class KeyringError(ValueError):
    """A keyring specification that cannot be used (the message never contains key material)."""


class DecryptionError(ValueError):
    """Ciphertext that no key in the keyring can open (unknown key id, tampering, wrong AAD)."""


@dataclass(frozen=True, slots=True)
class Sealed:
    key_id: str
    ciphertext: bytes  # nonce followed by AES-GCM output


class Keyring:
    """Named AES-256-GCM keys; ``current_key_id`` encrypts."""

    def __init__(self, keys: dict[str, bytes], current_key_id: str) -> None:
        if current_key_id not in keys:
            raise KeyringError(f"current key id {current_key_id!r} is not in the keyring")
        self._keys = {kid: AESGCM(key) for kid, key in keys.items()}
        self.current_key_id = current_key_id

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """Read ``"kid:base64key,kid:base64key"`` (first = current)."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            kid, sep, encoded = part.partition(":")
            if not sep or not kid:
                raise KeyringError(
                    "DASHTAM_ENCRYPTION_KEYS entries must be kid:base64key, separated by commas"
                )
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(
                    f"DASHTAM_ENCRYPTION_KEYS key {kid!r} is not valid base64"
                ) from None
            if len(key) != 32:
                raise KeyringError(
                    f"DASHTAM_ENCRYPTION_KEYS key {kid!r} must decode to 32 bytes (AES-256)"
                )
            if kid in keys:
                raise KeyringError(f"DASHTAM_ENCRYPTION_KEYS names key {kid!r} twice")
            keys[kid] = key
            order.append(kid)
        if not order:
            raise KeyringError("DASHTAM_ENCRYPTION_KEYS holds no key")
        return cls(keys, order[0])

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def encrypt(self, plaintext: bytes, *, aad: bytes) -> Sealed:
        nonce = os.urandom(_NONCE_BYTES)
        cipher = self._keys[self.current_key_id]
        return Sealed(self.current_key_id, nonce + cipher.encrypt(nonce, plaintext, aad))

    def decrypt(self, sealed: Sealed, *, aad: bytes) -> bytes:
        cipher = self._keys.get(sealed.key_id)
        if cipher is None:
            raise DecryptionError(f"no key {sealed.key_id!r} in the keyring")
        nonce, body = sealed.ciphertext[:_NONCE_BYTES], sealed.ciphertext[_NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, body, aad)
        except InvalidTag:
            raise DecryptionError("ciphertext failed authentication") from None

    def encrypt_text(self, plaintext: str, *, aad: str) -> Sealed:
        return self.encrypt(plaintext.encode(), aad=aad.encode())

    def decrypt_text(self, sealed: Sealed, *, aad: str) -> str:
        return self.decrypt(sealed, aad=aad.encode()).decode()

    def reseal(self, sealed: Sealed, *, aad: bytes) -> Sealed:
        """Re-encrypt under the current key (no-op when already current)."""
        if sealed.key_id == self.current_key_id:
            return sealed
        return self.encrypt(self.decrypt(sealed, aad=aad), aad=aad)
