"""What services need to know about the request that is not its body."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import httpx

from dashtam.core.config import Settings
from dashtam.core.crypto import Keyring

# Given a provider key, an httpx client whose transport reaches that provider.
HttpClientFactory = Callable[[str], httpx.AsyncClient]


class UserRef(Protocol):
    """Whose data a service acts on: a ``User`` or the caller's ``auth.Account``."""

    @property
    def id(self) -> uuid.UUID: ...


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is calling from where (for the audit log) and how this Dashtam is addressed."""

    ip_address: str | None
    user_agent: str | None
    base_url: str


@lru_cache(maxsize=4)
def _keyring(spec: str) -> Keyring:
    return Keyring.parse(spec)


def keyring_for(settings: Settings) -> Keyring:
    return _keyring(settings.keyring_spec)
