"""Passwords, access tokens, signed state, PKCE."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from dashtam.core import security
from dashtam.core.clock import utcnow

SECRET = "unit-test-secret-key-that-is-long-enough"


async def test_passwords_hash_with_argon2id_and_verify() -> None:
    hashed = await security.hash_password("hunter2 hunter2")
    assert hashed.startswith("$argon2id$")
    assert "hunter2" not in hashed
    assert await security.verify_password("hunter2 hunter2", hashed)
    assert not await security.verify_password("hunter3 hunter3", hashed)
    assert not await security.verify_password("anything", None)
    assert not await security.verify_password("anything", "not-a-hash")


def test_access_token_round_trip_and_rejections() -> None:
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    token = security.create_access_token(
        user_id=user_id, session_id=session_id, secret=SECRET, lifetime=timedelta(minutes=5)
    )
    assert token.expires_in == 300
    assert security.decode_access_token(token.token, secret=SECRET) == security.AccessClaims(
        user_id, session_id
    )
    with pytest.raises(security.InvalidTokenError):
        security.decode_access_token(token.token, secret="another-secret-key-of-enough-length")
    expired = security.create_access_token(
        user_id=user_id, session_id=session_id, secret=SECRET, lifetime=timedelta(seconds=-1)
    )
    with pytest.raises(security.InvalidTokenError, match="expired"):
        security.decode_access_token(expired.token, secret=SECRET)


def test_a_token_verified_before_is_refused_once_it_has_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = security.create_access_token(
        user_id=uuid.uuid4(), session_id=uuid.uuid4(), secret=SECRET, lifetime=timedelta(minutes=5)
    )
    security.decode_access_token(token.token, secret=SECRET)  # verified, and kept
    after_expiry = time.time() + 301
    monkeypatch.setattr(security.time, "time", lambda: after_expiry)

    with pytest.raises(security.InvalidTokenError, match="expired"):
        security.decode_access_token(token.token, secret=SECRET)


def test_signed_state_binds_audience_and_expiry_and_detects_tampering() -> None:
    state = security.sign_value(
        {"sid": "1"}, secret=SECRET, audience="state", expires_at=utcnow() + timedelta(minutes=1)
    )
    assert security.unsign_value(state, secret=SECRET, audience="state")["sid"] == "1"
    with pytest.raises(security.InvalidTokenError):
        security.unsign_value(state, secret=SECRET, audience="access")
    header, payload, signature = state.split(".")
    with pytest.raises(security.InvalidTokenError):
        security.unsign_value(f"{header}.{payload}x.{signature}", secret=SECRET, audience="state")
    old = security.sign_value(
        {"sid": "1"}, secret=SECRET, audience="state", expires_at=utcnow() - timedelta(seconds=1)
    )
    with pytest.raises(security.InvalidTokenError, match="expired"):
        security.unsign_value(old, secret=SECRET, audience="state")
    # An access token is not a state, even with the same secret.
    access = security.create_access_token(
        user_id=uuid.uuid4(), session_id=uuid.uuid4(), secret=SECRET, lifetime=timedelta(minutes=1)
    )
    with pytest.raises(security.InvalidTokenError):
        security.unsign_value(access.token, secret=SECRET, audience="state")


def test_pkce_s256_matches_rfc7636_example() -> None:
    # RFC 7636 appendix B
    assert (
        security.pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    verifier, challenge = security.pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert security.pkce_challenge(verifier) == challenge


def test_opaque_tokens_are_stored_as_hashes() -> None:
    token = security.new_opaque_token()
    assert len(token) >= 43
    digest = security.hash_opaque_token(token)
    assert digest != token
    assert len(digest) == 64
    assert security.hash_opaque_token(token) == digest
