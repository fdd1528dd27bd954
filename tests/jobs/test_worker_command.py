"""``dashtam worker``: the command a deployment runs, on the test's own database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dashtam.core.config import get_settings
from tests.support.accounts import Account, add_provider, connect
from tests.support.database import PgDatabase, libpq_url
from tests.support.environment import user_environment

DASHTAM = Path(sys.executable).parent / "dashtam"


@pytest.mark.pg_isolation("database")
def test_the_worker_command_runs_a_queued_sync(
    client: TestClient,
    account: Account,
    pg_database: PgDatabase,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "sync_in_api", False)
    pid = add_provider(client, account)["id"]
    connect(client, account, pid)
    started = client.post(f"/api/v1/providers/{pid}/syncs", headers=account.headers)
    assert started.status_code == 202
    sync_path = f"/api/v1/providers/{pid}/syncs/{started.json()['id']}"
    assert client.get(sync_path, headers=account.headers).json()["status"] == "queued"

    worker = subprocess.run(
        [str(DASHTAM), "worker", "--once"],
        cwd=tmp_path,
        env=user_environment(
            DATABASE_URL=libpq_url(pg_database.sync_url),
            DASHTAM_ENV="test",
            # The same keys as this process: the worker opens the tokens the API sealed.
            DASHTAM_SECRET_KEY=settings.signing_key,
            DASHTAM_ENCRYPTION_KEYS=settings.keyring_spec,
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert worker.returncode == 0, worker.stderr
    assert "job worker started" in worker.stderr
    done = client.get(sync_path, headers=account.headers).json()
    assert done["status"] == "succeeded", done
    assert client.get("/api/v1/accounts", headers=account.headers).json()["total"] == 2
    assert settings.signing_key not in worker.stderr
