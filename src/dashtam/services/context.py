"""What services need to know about the request that is not its body."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import httpx

from dashtam.core.config import Settings
from dashtam.core.crypto import Keyring

# Given a provider key, an httpx client whose transport reaches that provider.
HttpClientFactory = Callable[[str], httpx.AsyncClient]
PROVIDER_HTTP_TIMEOUT = httpx.Timeout(15.0)


def http_clients(transports: Mapping[str, httpx.AsyncBaseTransport]) -> HttpClientFactory:
    """Clients for provider calls: a provider's own transport where one is registered (the
    in-process sandbox, a test's ``httpx.MockTransport``), else the network."""

    def factory(provider_key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=transports.get(provider_key), timeout=PROVIDER_HTTP_TIMEOUT
        )

    return factory


class UserRef(Protocol):
    """Whose data a service acts on: a ``User`` or the caller's ``callers.CallerUser``."""

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
