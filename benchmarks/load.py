"""Dashtam under load, and under a PostgreSQL restart.

Starts its own embedded PostgreSQL in a temp dir (socket only; never the machine's server)
and ``dashtam serve --workers W`` on a spare loopback port, in production mode. Each of
``--clients`` concurrent clients registers, connects a sandbox provider through the OAuth
flow and syncs its accounts, then loops for ``--duration`` seconds over: login, list
providers, connection status, token refresh, list accounts, a page of transactions (and, with
``--faults``, create a provider). Reports p50/p99 per call, requests
per second and errors, and rewrites the "Dashtam under load" section of docs/benchmarks.md.

``--faults`` restarts PostgreSQL (``pg_ctl stop -m fast`` + start) a third of the way in and
then checks what the service promises: every failed request in the gap is a 503
``application/problem+json`` answered within the client timeout; the service recovers by
itself (requests succeed again without restarting it); and every acknowledged write (each
``201`` provider) is in the database afterwards. The exit status is 1 when a promise fails.

    .venv/bin/python benchmarks/load.py [--clients 32] [--duration 20] [--workers 2]
    .venv/bin/python benchmarks/load.py --faults [--duration 20] [--no-docs]

``BENCHMARK_KEEP=1`` keeps the temp dir (server log ``serve.log``, PostgreSQL data).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _support
import httpx
import psycopg

from dashtam.core.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Dashtam under load"
PASSWORD = "load test password 1"
CLIENT_TIMEOUT = 10.0


@dataclass
class Sample:
    call: str
    status: int
    seconds: float
    started: float
    problem: bool
    provider: str = ""


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    # provider id -> highest refresh_count a 201 refresh answered with
    refreshed: dict[str, int] = field(default_factory=dict)
    outage: tuple[float, float] | None = None
    failures: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_env(database_url: str, public_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DASHTAM_ENV": "production",
            "DATABASE_URL": database_url,
            "DASHTAM_SECRET_KEY": secrets.token_urlsafe(48),
            "DASHTAM_ENCRYPTION_KEYS": "k1:" + base64.b64encode(os.urandom(32)).decode(),
            "DASHTAM_PUBLIC_URL": public_url,
            # OWASP's minimum argon2id profile (19 MiB, 2 passes): the load is many logins on
            # 2 shared cores; the production default (64 MiB, 3 passes) is ~4x the CPU.
            "DASHTAM_PASSWORD_HASH_MEMORY_KIB": "19456",
            "DASHTAM_PASSWORD_HASH_TIME_COST": "2",
            "DASHTAM_LOGIN_MAX_FAILURES_PER_ADDRESS": "1000",
            # Every simulated client comes from 127.0.0.1.
            "DASHTAM_REGISTER_MAX_PER_ADDRESS": "100000",
            "DASHTAM_AUTH_REFRESH_MAX_PER_ADDRESS": "100000",
            "DASHTAM_SANDBOX_AUTHORIZE_MAX_PER_ADDRESS": "100000",
            "DASHTAM_SANDBOX_ENABLED": "true",
            "DASHTAM_DB_POOL_TIMEOUT": "5",
            "DASHTAM_DB_CONNECT_TIMEOUT": "3",
        }
    )
    env.pop("PGHARNESS_URL", None)
    return env


def _start_service(
    workers: int, database_url: str, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "dashtam.cli", "serve", "--workers", str(workers)]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env=_server_env(database_url, base),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=log.parent,
    )
    try:
        _support.wait_until_ready(base, process, 60)
    except RuntimeError as exc:
        process.terminate()
        raise RuntimeError(f"{exc}; see {log}") from None
    return process, base


async def _timed(run: Run, call: str, request: Any, provider: str = "") -> httpx.Response | None:
    started = time.monotonic()
    try:
        response: httpx.Response = await request
    except httpx.HTTPError as exc:
        run.samples.append(Sample(call, 0, time.monotonic() - started, started, False, provider))
        run.failures.append(f"{call}: no answer within {CLIENT_TIMEOUT} s ({type(exc).__name__})")
        return None
    problem = response.headers.get("content-type", "").startswith("application/problem+json")
    elapsed = time.monotonic() - started
    run.samples.append(Sample(call, response.status_code, elapsed, started, problem, provider))
    return response


async def _synced_account(
    http: httpx.AsyncClient, headers: dict[str, str], provider_id: str
) -> str:
    """Sync the provider's accounts (the API runs it behind its 202); the first account's id."""
    started = await http.post(f"/api/v1/providers/{provider_id}/syncs", headers=headers)
    started.raise_for_status()
    status_url = f"/api/v1/providers/{provider_id}/syncs/{started.json()['id']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sync = (await http.get(status_url, headers=headers)).json()
        if sync["status"] == "failed":
            raise RuntimeError(f"the sync failed: {sync['error']}")
        if sync["status"] == "succeeded":
            accounts = await http.get(
                "/api/v1/accounts", params={"provider_id": provider_id}, headers=headers
            )
            accounts.raise_for_status()
            account_id: str = accounts.json()["items"][0]["id"]
            return account_id
        await asyncio.sleep(0.2)
    raise RuntimeError("the sync did not finish within 60 s")


async def _prepare_client(http: httpx.AsyncClient, number: int) -> tuple[str, str, str]:
    email = f"load-{number}-{secrets.token_hex(3)}@example.com"
    credentials = {"email": email, "password": PASSWORD}
    (await http.post("/api/v1/auth/register", json=credentials)).raise_for_status()
    login = await http.post("/api/v1/auth/login", json=credentials)
    login.raise_for_status()
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    created = await http.post(
        "/api/v1/providers", json={"provider_key": "sandbox", "alias": "main"}, headers=headers
    )
    created.raise_for_status()
    provider_id = created.json()["id"]
    start = await http.post(f"/api/v1/providers/{provider_id}/authorization", headers=headers)
    start.raise_for_status()
    callback = await http.get(start.json()["authorization_url"], follow_redirects=True)
    callback.raise_for_status()
    return email, provider_id, await _synced_account(http, headers, provider_id)


async def _client_loop(
    http: httpx.AsyncClient,
    run: Run,
    email: str,
    provider_id: str,
    account_id: str,
    until: float,
    faults: bool,
) -> None:
    credentials = {"email": email, "password": PASSWORD}
    headers: dict[str, str] = {}
    created = 0
    while time.monotonic() < until:
        login = await _timed(run, "login", http.post("/api/v1/auth/login", json=credentials))
        if login is not None and login.status_code == 200:
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        if not headers:
            continue
        await _timed(run, "list providers", http.get("/api/v1/providers", headers=headers))
        status_url = f"/api/v1/providers/{provider_id}/authorization"
        await _timed(run, "status", http.get(status_url, headers=headers))
        refresh_url = f"/api/v1/providers/{provider_id}/token-refreshes"
        refreshed = await _timed(
            run, "refresh", http.post(refresh_url, headers=headers), provider_id
        )
        if refreshed is not None and refreshed.status_code == 201:
            count = refreshed.json()["refresh_count"]
            run.refreshed[provider_id] = max(count, run.refreshed.get(provider_id, 0))
        await _timed(run, "list accounts", http.get("/api/v1/accounts", headers=headers))
        transactions_url = f"/api/v1/accounts/{account_id}/transactions"
        await _timed(run, "transactions", http.get(transactions_url, headers=headers))
        if faults:
            created += 1
            body = {"provider_key": "sandbox", "alias": f"write {created}"}
            answer = await _timed(
                run, "create provider", http.post("/api/v1/providers", json=body, headers=headers)
            )
            if answer is not None and answer.status_code == 201:
                run.acknowledged.append(answer.json()["id"])


async def _restart_database(server: EmbeddedPostgres, run: Run, at: float) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    began = time.monotonic()
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
    run.outage = (began, time.monotonic())


async def _drive(
    base: str, server: EmbeddedPostgres, clients: int, duration: float, faults: bool
) -> tuple[Run, float]:
    run = Run()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT, limits=limits) as http:
        prepared = await asyncio.gather(*(_prepare_client(http, n) for n in range(clients)))
        started = time.monotonic()
        until = started + duration
        tasks = [
            _client_loop(http, run, email, provider_id, account_id, until, faults)
            for email, provider_id, account_id in prepared
        ]
        if faults:
            tasks.append(_restart_database(server, run, started + duration / 3))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
    return run, elapsed


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def _table(run: Run, elapsed: float) -> list[str]:
    lines = [
        "| call | requests | errors | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    calls = sorted(
        {s.call for s in run.samples}, key=lambda c: [s.call for s in run.samples].index(c)
    )
    for call in [*calls, "all"]:
        chosen = [s for s in run.samples if call in {"all", s.call}]
        times = [s.seconds * 1000 for s in chosen]
        errors = sum(1 for s in chosen if s.status == 0 or s.status >= 400)
        lines.append(
            f"| {call} | {len(chosen)} | {errors} | {_percentile(times, 0.5):.1f} |"
            f" {_percentile(times, 0.99):.1f} | {max(times):.1f} |"
        )
    lines.append("")
    lines.append(
        f"Throughput: **{len(run.samples) / elapsed:.0f} requests/s** over {elapsed:.1f} s."
    )
    return lines


def _check_faults(run: Run, database_url: str) -> list[str]:
    assert run.outage is not None
    down, up = run.outage
    # A refresh whose provider call succeeded but whose new grant never reached the database
    # (Dashtam retries that write on a fresh connection): the provider rotated the refresh
    # token, the old one stays stored, so the provider refuses it afterwards (502
    # invalid_grant, then 429 backoff) until the user re-authorizes.
    lost_rotation = {
        s.provider
        for s in run.samples
        if s.call == "refresh" and s.started > up and s.status in {429, 502}
    }
    in_gap = [
        s
        for s in run.samples
        if (s.status == 0 or s.status >= 400) and s.provider not in lost_rotation
    ]
    unclean = [s for s in in_gap if not (s.status == 503 and s.problem)]
    healthy = [s for s in run.samples if s.started > up + 2 and s.provider not in lost_rotation]
    recovered = bool(healthy) and all(s.status < 400 for s in healthy)
    with psycopg.connect(database_url) as conn:
        found = {
            str(row[0])
            for row in conn.execute(
                "SELECT id FROM providers WHERE id = ANY(%s::uuid[])", (run.acknowledged,)
            )
        }
        counts = dict(
            conn.execute(
                "SELECT p.id::text, c.refresh_count FROM providers p"
                " JOIN provider_connections c ON c.provider_id = p.id"
            ).fetchall()
        )
    lost = [pid for pid in run.acknowledged if pid not in found]
    lost_refreshes = [pid for pid, n in run.refreshed.items() if counts.get(pid, 0) < n]
    slowest = max(s.seconds for s in run.samples)
    last_error = max((s.started + s.seconds for s in in_gap), default=up) - up
    outcome = [
        f"- PostgreSQL was down for {up - down:.1f} s (`pg_ctl stop -m fast`, then start).",
        f"- {len(in_gap)} request(s) failed around the restart: "
        f"{len(in_gap) - len(unclean)} as 503 `application/problem+json`, "
        f"{len(unclean)} otherwise; "
        + (
            "all of them answered while PostgreSQL was down."
            if last_error <= 0
            else f"the last one answered {last_error:.1f} s after PostgreSQL was back."
        ),
        f"- Slowest answer: {slowest:.2f} s (client timeout {CLIENT_TIMEOUT:.0f} s).",
        f"- Recovered by itself: {'yes' if recovered else 'NO'} "
        f"({len(healthy)} requests from 2 s after the restart, all answered without error).",
        f"- Acknowledged writes: {len(run.acknowledged)} providers created (201), "
        f"{len(lost)} missing; {sum(run.refreshed.values())} refreshes acknowledged (201), "
        f"{len(lost_refreshes)} connection(s) with fewer refreshes stored than acknowledged.",
        f"- Connections whose in-flight refresh lost its rotation: {len(lost_rotation)} of "
        f"{len(run.refreshed) or len(lost_rotation)} (the provider rotated but the new grant was "
        "never stored; the provider then refuses the old token, so the user re-authorizes).",
    ]
    if unclean:
        run.failures.append(
            f"{len(unclean)} failed request(s) were not 503 problem+json: "
            + ", ".join(sorted({f"{s.call} {s.status}" for s in unclean}))
        )
    if not recovered:
        run.failures.append("the service did not recover after the restart")
    if lost or lost_refreshes:
        run.failures.append(f"{len(lost) + len(lost_refreshes)} acknowledged write(s) lost")
    if lost_rotation:
        run.failures.append(f"{len(lost_rotation)} connection(s) lost their rotated refresh token")
    return outcome


_INTRO = (
    "Written by `benchmarks/load.py` (steady) and `benchmarks/load.py --faults` (PostgreSQL"
    " restarted mid-run); each run replaces its own subsection. The multi-worker mode measured"
    " here is the one `docs/deploy.md` describes."
)


def _write_section(title: str, lines: list[str]) -> None:
    """Replace this mode's ``### title`` block inside the section, leaving the rest alone."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    section_re = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = section_re.search(text)
    body = found.group(0) if found else f"{SECTION}\n\n{_INTRO}\n"
    block = f"### {title}\n\n" + "\n".join(lines).rstrip() + "\n"
    block_re = re.compile(rf"^### {re.escape(title)}\n.*?(?=^### |\Z)", re.S | re.M)
    if block_re.search(body):
        body = block_re.sub(lambda _: block + "\n", body, count=1)
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    body = body.rstrip() + "\n\n"
    if found:
        text = text[: found.start()] + body + text[found.end() :]
    else:
        text = text.rstrip() + "\n\n" + body
    DOCS.write_text(text.rstrip() + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--faults", action="store_true", help="restart PostgreSQL during load")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    workdir = Path(tempfile.mkdtemp(prefix="dashtam-load-"))
    server = EmbeddedPostgres(workdir / "pg")
    process: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        server.ensure_database("dashtam")
        database_url = server.url("dashtam")
        process, base = _start_service(args.workers, database_url, workdir / "serve.log")
        run, elapsed = asyncio.run(_drive(base, server, args.clients, args.duration, args.faults))
        mode = "with a PostgreSQL restart" if args.faults else "steady"
        lines = [
            f"`benchmarks/load.py{' --faults' if args.faults else ''}`: {mode}, "
            f"`dashtam serve --workers {args.workers}` (production settings, argon2id 19 MiB x 2),"
            f" {args.clients} concurrent httpx clients on loopback for {args.duration:.0f} s,"
            " each with a synced sandbox, looping login, list providers, connection status,"
            " token refresh, list accounts, a page of transactions"
            f"{', create provider' if args.faults else ''}; embedded PostgreSQL 18;"
            f" {os.cpu_count()} cores shared with the load generator (load average"
            f" {load_before:.1f} before the run).",
            "",
            *_table(run, elapsed),
        ]
        if args.faults:
            lines += ["", *_check_faults(run, database_url)]
        else:
            errors = sum(1 for s in run.samples if s.status == 0 or s.status >= 400)
            if errors:
                run.failures.append(f"{errors} error(s) under steady load")
        print("\n".join(lines))
        if run.failures:
            print("\nFAILED:\n- " + "\n- ".join(run.failures[:20]), file=sys.stderr)
        if not args.no_docs:
            _write_section(
                "PostgreSQL restarted during load" if args.faults else "Steady load", lines
            )
        return 1 if run.failures else 0
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        server.stop()
        if os.environ.get("BENCHMARK_KEEP"):
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
