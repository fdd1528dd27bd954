"""Settings: production refuses to start without real secrets; URLs are normalized."""

from __future__ import annotations

import pytest

from dashtam.core.config import (
    ConfigurationError,
    Environment,
    build_settings,
    load_dev_secrets,
    new_encryption_key,
    to_asyncpg_url,
)


def test_production_without_database_url_or_keys_stops_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DATABASE_URL", "DASHTAM_SECRET_KEY", "DASHTAM_ENCRYPTION_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DASHTAM_ENV", "production")
    with pytest.raises(ConfigurationError) as info:
        build_settings()
    message = str(info.value)
    assert "DATABASE_URL" in message
    assert "DASHTAM_SECRET_KEY" in message
    assert "DASHTAM_ENCRYPTION_KEYS" in message


def test_production_refuses_a_default_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHTAM_ENV", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2@db/dashtam")
    monkeypatch.setenv("DASHTAM_SECRET_KEY", "changeme")
    monkeypatch.setenv("DASHTAM_ENCRYPTION_KEYS", f"k1:{new_encryption_key()}")
    with pytest.raises(ConfigurationError) as info:
        build_settings()
    assert "DASHTAM_SECRET_KEY" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_production_with_everything_set_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHTAM_ENV", "production")
    monkeypatch.setenv("DATABASE_URL", "postgres://app@db/dashtam")
    monkeypatch.setenv("DASHTAM_SECRET_KEY", "x" * 40)
    monkeypatch.setenv("DASHTAM_ENCRYPTION_KEYS", f"k1:{new_encryption_key()}")
    settings = build_settings()
    assert settings.env is Environment.PRODUCTION
    assert settings.async_database_url == "postgresql+asyncpg://app@db/dashtam"


def test_development_secrets_are_generated_once_and_kept(tmp_path: object) -> None:
    from pathlib import Path

    data_dir = Path(str(tmp_path)) / ".dashtam"
    first = load_dev_secrets(data_dir)
    assert load_dev_secrets(data_dir) == first
    assert (data_dir / "dev-secrets.json").stat().st_mode & 0o077 == 0


def test_urls_are_spelled_for_asyncpg() -> None:
    assert to_asyncpg_url("postgresql://u@h/d") == "postgresql+asyncpg://u@h/d"
    assert to_asyncpg_url("postgresql+psycopg://u@h/d") == "postgresql+asyncpg://u@h/d"
    with pytest.raises(ConfigurationError):
        to_asyncpg_url("mysql://u@h/d")


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("DASHTAM_SYNC_IN_AP", "DASHTAM_SYNC_IN_API"), ("DASHTAM_DATABASE_URL", "DATABASE_URL")],
)
def test_a_misspelled_setting_stops_the_start_naming_the_right_one(
    monkeypatch: pytest.MonkeyPatch, name: str, suggestion: str
) -> None:
    monkeypatch.setenv(name, "postgresql://app:hunter2@db/dashtam")
    with pytest.raises(ConfigurationError) as info:
        build_settings()
    message = str(info.value)
    assert f"{name} (did you mean {suggestion}?)" in message
    assert "hunter2" not in message
