"""Dashtam's settings, read from the environment (``DASHTAM_*`` and ``DATABASE_URL``).

Example::

    DASHTAM_ENV=production DATABASE_URL=postgresql://app@db/dashtam \\
    DASHTAM_SECRET_KEY=... DASHTAM_ENCRYPTION_KEYS=k2:BASE64,k1:BASE64 dashtam serve

In development, missing secrets are generated once and kept in ``.dashtam/``; in production a
missing database URL, secret key or encryption key stops the start with a message naming it.
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ConfigurationError(RuntimeError):
    """Settings that cannot run: the message names the setting and the fix."""


_DEV_SECRETS_FILE = "dev-secrets.json"
_WEAK_SECRETS = {"", "changeme", "change-me", "secret", "dev", "development"}


def new_encryption_key() -> str:
    """A fresh 256-bit AES key, base64 encoded as ``DASHTAM_ENCRYPTION_KEYS`` expects."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DASHTAM_", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    data_dir: Path = Path(".dashtam")
    secret_key: str | None = None
    # "kid:base64key,kid:base64key"; the first one encrypts, every one decrypts.
    encryption_keys: str | None = None
    # How users reach this Dashtam: OAuth redirect URIs are built from it, never from the
    # request's Host header (which the client chooses).
    public_url: str = "http://127.0.0.1:8000"
    # The built-in sandbox OAuth server and /docs: on by default except in production.
    sandbox_enabled: bool | None = None
    docs_enabled: bool | None = None
    migrate_on_start: bool = True

    access_token_minutes: int = Field(default=15, ge=1)
    refresh_token_days: int = Field(default=14, ge=1)
    # A login refresh token presented again this soon after its use is a retried request
    # (409, the session lives), not a stolen token (which ends the session).
    auth_refresh_retry_seconds: int = Field(default=10, ge=0, le=60)
    # argon2id cost (RFC 9106 "second recommended" by default: 64 MiB, 3 passes).
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=65_536, ge=8)
    # Hashes computed at once per worker process (each takes one core for its duration).
    password_hash_concurrency: int = Field(default=2, ge=1)
    authorization_state_seconds: int = Field(default=600, ge=1)

    sandbox_access_token_seconds: int = Field(default=600, ge=1)
    sandbox_refresh_token_seconds: int = Field(default=86_400, ge=1)
    sandbox_code_seconds: int = Field(default=120, ge=1)
    # Seconds a used sandbox refresh token is still accepted (a client that lost the answer
    # retries with it), as Okta's refresh-token grace period and Auth0's reuse interval allow.
    sandbox_refresh_reuse_grace_seconds: int = Field(default=0, ge=0, le=300)

    # Request bodies above this many bytes are refused with 413 before they are read.
    max_request_bytes: int = Field(default=65_536, ge=1024)

    # Login throttling, shared by every worker through PostgreSQL (docs/deploy.md states the
    # policy). Per account: after this many failures within the window, each further attempt
    # waits a doubling delay, at most login_max_delay_seconds; the owner is never locked out
    # for longer. Per client address: this many failures within the window block the address
    # for login_lockout_seconds.
    login_max_failures_per_account: int = Field(default=5, ge=1)
    login_max_delay_seconds: int = Field(default=60, ge=1, le=60)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    login_lockout_seconds: int = Field(default=900, ge=1)
    # Requests per client address within the window, for the unauthenticated endpoints that
    # cost work or rows: registration (argon2), login refresh, the sandbox's authorize.
    register_max_per_address: int = Field(default=10, ge=1)
    register_window_seconds: int = Field(default=3600, ge=1)
    auth_refresh_max_per_address: int = Field(default=60, ge=1)
    auth_refresh_window_seconds: int = Field(default=60, ge=1)
    sandbox_authorize_max_per_address: int = Field(default=30, ge=1)
    sandbox_authorize_window_seconds: int = Field(default=60, ge=1)

    # Requests one worker process serves at once. The connection pool is sized from it: one
    # kept connection per request in flight (a pool smaller than the concurrency opens and
    # closes a connection for every request beyond it), and overflow for the second
    # connection a token refresh holds meanwhile. workers x (pool size + overflow) must stay
    # below the server's max_connections (docs/deploy.md).
    concurrency: int = Field(default=16, ge=1)
    db_pool_size: int | None = Field(default=None, ge=1)
    db_max_overflow: int | None = Field(default=None, ge=0)
    # Seconds a request waits for a pooled connection, for a new connection, for one
    # statement, and for a row lock, before it fails with 503 instead of hanging.
    db_pool_timeout: float = Field(default=10.0, gt=0)
    db_connect_timeout: float = Field(default=5.0, gt=0)
    db_statement_timeout: float = Field(default=30.0, gt=0)
    db_lock_timeout: float = Field(default=10.0, gt=0)

    schwab_client_id: str | None = None
    schwab_client_secret: str | None = None
    schwab_authorize_url: str = "https://api.schwabapi.com/v1/oauth/authorize"
    schwab_token_url: str = "https://api.schwabapi.com/v1/oauth/token"
    schwab_api_url: str = "https://api.schwabapi.com/trader/v1"

    # Syncs: a provider is synced again by the periodic job once its last sync is this old;
    # a sync still running after sync_stale_seconds is taken as abandoned (its process died).
    sync_every_seconds: int = Field(default=900, ge=10)
    sync_stale_seconds: int = Field(default=900, ge=60)
    # First sync: how far back transactions are read; later syncs re-read a few days back.
    sync_history_days: int = Field(default=90, ge=1, le=3650)
    sync_overlap_days: int = Field(default=7, ge=0, le=365)
    # The API runs a requested sync itself once it has answered (a lone API process needs no
    # worker for it); false leaves requested syncs to the workers.
    sync_in_api: bool = True
    # Tokens expiring within this many seconds are refreshed by the periodic job.
    refresh_margin_seconds: int = Field(default=300, ge=30)

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> Settings:
        if self.env is not Environment.PRODUCTION:
            return self
        missing = []
        if not self.database_url:
            missing.append("DATABASE_URL (e.g. postgresql://user:password@host/dashtam)")
        if not self.secret_key or self.secret_key.strip().lower() in _WEAK_SECRETS:
            missing.append("DASHTAM_SECRET_KEY (a random string of 32+ characters)")
        elif len(self.secret_key) < 32:
            missing.append("DASHTAM_SECRET_KEY (too short: use 32+ random characters)")
        if not self.encryption_keys:
            missing.append("DASHTAM_ENCRYPTION_KEYS (e.g. k1:<base64 of 32 random bytes>)")
        if missing:
            raise ValueError(
                "DASHTAM_ENV=production refuses to start without: " + "; ".join(missing)
            )
        return self

    @property
    def sandbox_is_enabled(self) -> bool:
        if self.sandbox_enabled is None:
            return self.env is not Environment.PRODUCTION
        return self.sandbox_enabled

    @property
    def docs_are_enabled(self) -> bool:
        if self.docs_enabled is None:
            return self.env is not Environment.PRODUCTION
        return self.docs_enabled

    @property
    def pool_size(self) -> int:
        """Connections each worker keeps: ``DASHTAM_DB_POOL_SIZE``, else the concurrency."""
        return self.db_pool_size if self.db_pool_size is not None else self.concurrency

    @property
    def pool_overflow(self) -> int:
        """Connections opened beyond the pool at peaks and closed after use."""
        if self.db_max_overflow is not None:
            return self.db_max_overflow
        return max(2, self.concurrency // 2)

    @property
    def async_database_url(self) -> str:
        """``database_url`` spelled for SQLAlchemy's asyncpg driver."""
        return to_asyncpg_url(self.database_url or _FALLBACK_DATABASE_URL)

    @property
    def signing_key(self) -> str:
        if self.secret_key is None:  # filled in by get_settings() outside production
            raise ConfigurationError("DASHTAM_SECRET_KEY is not set")
        return self.secret_key

    @property
    def keyring_spec(self) -> str:
        if self.encryption_keys is None:
            raise ConfigurationError("DASHTAM_ENCRYPTION_KEYS is not set")
        return self.encryption_keys


_FALLBACK_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/dashtam"


def to_asyncpg_url(url: str) -> str:
    """Accept the usual spellings (``postgres://``, ``postgresql+psycopg://``) for asyncpg."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError("DATABASE_URL must look like postgresql://user@host/dbname")
    if scheme in {"postgres", "postgresql"} or scheme.startswith("postgresql+"):
        return f"postgresql+asyncpg://{rest}"
    raise ConfigurationError(
        f"DATABASE_URL must be a PostgreSQL URL (postgresql://...), not {scheme}://"
    )


def to_libpq_url(url: str) -> str:
    """``url`` as libpq (and so psycopg and the job queue) spells it: no driver suffix."""
    return "postgresql://" + to_asyncpg_url(url).partition("://")[2]


def load_dev_secrets(data_dir: Path) -> dict[str, str]:
    """Development secrets, generated on first use and kept beside the embedded database."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / _DEV_SECRETS_FILE
    fresh = {
        "secret_key": secrets.token_urlsafe(48),
        "encryption_keys": f"dev1:{new_encryption_key()}",
    }
    try:
        # O_EXCL: several workers starting at once agree on the first writer's secrets.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    with os.fdopen(fd, "w") as handle:
        json.dump(fresh, handle)
    return fresh


def _environment_names() -> dict[str, str]:
    """The environment variable each setting is read from, by that variable's name."""
    names = {}
    for field_name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            env_name = str(alias.choices[0])
        else:
            env_name = f"DASHTAM_{field_name}"
        names[env_name.upper()] = field_name
    return names


def _check_environment_names() -> None:
    """A ``DASHTAM_*`` variable no setting reads is a mistake (a typo, a setting of another
    version, ``DASHTAM_DATABASE_URL`` for ``DATABASE_URL``): pydantic would ignore it, and
    Dashtam would run on the default it meant to change."""
    known = _environment_names()
    unknown = sorted(
        name
        for name in os.environ
        if name.upper().startswith("DASHTAM_") and name.upper() not in known
    )
    if not unknown:
        return
    # Compared without the prefix, so that DASHTAM_DATABASE_URL finds DATABASE_URL.
    by_stem = {env_name.removeprefix("DASHTAM_"): env_name for env_name in known}
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper().removeprefix("DASHTAM_"), by_stem, n=1)
        hints.append(f"{name} (did you mean {by_stem[close[0]]}?)" if close else name)
    raise ConfigurationError(
        "Dashtam reads no setting from " + ", ".join(hints) + ". Fix the name, or unset it; "
        "the settings are listed in README.md."
    )


def build_settings(**overrides: Any) -> Settings:
    """Settings from the environment with missing development/test secrets filled in."""
    _check_environment_names()
    try:
        settings = Settings(**overrides)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigurationError(_first_message(exc)) from None
    if settings.secret_key and settings.encryption_keys:
        return settings
    if settings.env is Environment.TEST:
        generated = {
            "secret_key": secrets.token_urlsafe(48),
            "encryption_keys": f"test1:{new_encryption_key()}",
        }
    else:
        generated = load_dev_secrets(settings.data_dir)
    return settings.model_copy(
        update={
            "secret_key": settings.secret_key or generated["secret_key"],
            "encryption_keys": settings.encryption_keys or generated["encryption_keys"],
        }
    )


def _first_message(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        for error in errors():
            message = str(error.get("msg", ""))
            return message.removeprefix("Value error, ")
    return str(exc)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (read once)."""
    return build_settings()
