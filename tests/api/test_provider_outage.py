"""A provider outage (5xx, unreachable) is temporary: 503 to retry, no backoff, no error state."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.test_schwab import FakeSchwab, _connect_schwab, schwab  # noqa: F401 (fixture)
from tests.support.accounts import Account


class FlakySchwab(FakeSchwab):
    def __init__(self) -> None:
        super().__init__()
        self.down: int | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down is not None:
            self.requests.append({})
            return httpx.Response(self.down, text="upstream trouble")
        return super().handler(request)


@pytest.mark.parametrize("status", [500, 503, 504])
# The audit log is ordered by created_at = now(), the time a transaction began: each request
# needs a transaction of its own (as in production) for the order to be the request order.
@pytest.mark.pg_isolation("database")
def test_provider_outage_is_503_and_refresh_works_again_at_once(
    client: TestClient, account: Account, schwab_transport: object, status: int
) -> None:
    flaky = FlakySchwab()
    schwab_transport(httpx.MockTransport(flaky.handler))  # type: ignore[operator]
    pid = _connect_schwab(client, account, flaky)
    url = f"/api/v1/providers/{pid}/token-refreshes"

    flaky.down = status
    failed = client.post(url, headers=account.headers)
    assert failed.status_code == 503
    assert failed.headers["content-type"] == "application/problem+json"
    assert int(failed.headers["retry-after"]) >= 1
    assert "schwab-refresh" not in failed.text

    flaky.down = None
    recovered = client.post(url, headers=account.headers)
    assert recovered.status_code == 201, recovered.text
    assert recovered.json()["status"] == "active"
    assert recovered.json()["refresh_count"] == 1
    logs = client.get(f"/api/v1/providers/{pid}/audit-logs", headers=account.headers).json()
    outcomes = [
        (row["details"]["outcome"], row["details"].get("transient"))
        for row in logs["items"]
        if row["action"] == "refresh"
    ]
    assert outcomes == [("success", None), ("failure", True)]
