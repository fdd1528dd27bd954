"""Dashtam's read endpoints against the bare stack they run on (``bare_app.py``).

Starts its own embedded PostgreSQL in a temp dir, migrates it, and serves Dashtam
(production settings) and the bare app side by side, each as
``uvicorn --workers 1 --loop uvloop --http httptools --no-access-log``. One user with three
sandbox providers, each connected and synced once (two accounts each, their transactions
and balances); both apps are asked for the same listing and must answer the same bytes before
anything is measured. Then, for every endpoint, rounds alternate between the two apps (the
order rotating): ``--connections`` keep-alive connections, each sending its next request as
soon as the previous answer is in, for ``--duration`` seconds after a short warm-up.

The load generator is a plain asyncio HTTP/1.1 client (no httpx: that would spend about a
millisecond of client CPU per request); its CPU per request and its share of one core are
reported beside the servers' own CPU per request, to show it was not the limit.

    .venv/bin/python benchmarks/throughput.py [--rounds 5] [--duration 8] [--connections 16]
    .venv/bin/python benchmarks/throughput.py --write    # also rewrite its section of docs

An endpoint is a path served by both apps: a line in ``bare_app.LISTINGS`` (the SQL that
returns its rows), whose rows ``_seed`` creates through Dashtam's API (an ``{account_id}``
in the path is the reader's first account). ``--endpoints``
picks some. ``--json FILE`` writes the results for ``report.py``; ``--write`` renders them
into the "Dashtam against its bare stack" section of docs/benchmarks.md (and its chart),
leaving the rest of the page alone. The exit status is 1 when an answer was not 200.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import os
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _support
import bare_app
import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PASSWORD = "throughput password 1"
PROVIDERS = 3
WARM_UP_S = 1.0
APPS = ("dashtam", "bare")
# Where a read endpoint must stand against the bare app (issue 17): at least half its
# requests per second, at most three times its p99.
GOAL_RPS_RATIO = 0.5
GOAL_P99_RATIO = 3.0


# -- the two servers ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _uvicorn(app: str, port: int) -> list[str]:
    """Both apps run exactly so."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    def cpu_s(self) -> float:
        """User + system CPU of the server process so far (one worker: one process)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(name: str, command: list[str], env: dict[str, str], port: int, log: Path) -> Server:
    process = subprocess.Popen(
        command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=log.parent
    )
    server = Server(name, process, port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"{name} was not ready within 60 s:\n{log.read_text()[-3000:]}")


def _stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


@contextmanager
def _servers(workdir: Path, database_url: str, connections: int) -> Iterator[dict[str, Server]]:
    secret = secrets.token_urlsafe(48)
    common = {k: v for k, v in os.environ.items() if not k.startswith(("DASHTAM_", "BARE_"))}
    common.pop("PGHARNESS_URL", None)
    dashtam_port, bare_port = _free_port(), _free_port()
    dashtam_env = {
        **common,
        "DASHTAM_ENV": "production",
        "DATABASE_URL": database_url,
        "DASHTAM_SECRET_KEY": secret,
        "DASHTAM_ENCRYPTION_KEYS": "k1:" + base64.b64encode(os.urandom(32)).decode(),
        "DASHTAM_PUBLIC_URL": f"http://127.0.0.1:{dashtam_port}",
        "DASHTAM_SANDBOX_ENABLED": "true",
        "DASHTAM_CONCURRENCY": str(connections),
        # Seeding logs in once; the cost of a login is not what this measures.
        "DASHTAM_PASSWORD_HASH_MEMORY_KIB": "19456",
        "DASHTAM_PASSWORD_HASH_TIME_COST": "2",
    }
    bare_env = {
        **common,
        "BARE_DATABASE_URL": database_url,
        "BARE_SECRET_KEY": secret,
        "BARE_POOL_SIZE": str(connections),
    }
    started: dict[str, Server] = {}
    try:
        started["dashtam"] = _start(
            "dashtam",
            _uvicorn("dashtam.main:app", dashtam_port),
            dashtam_env,
            dashtam_port,
            workdir / "dashtam.log",
        )
        started["bare"] = _start(
            "bare",
            [*_uvicorn("bare_app:app", bare_port), "--app-dir", str(HERE)],
            bare_env,
            bare_port,
            workdir / "bare.log",
        )
        yield started
    finally:
        for server in started.values():
            _stop(server)


@dataclass
class Seeded:
    """The reader's access token, and what fills the endpoints' path parameters."""

    token: str
    path_params: dict[str, str]

    def path(self, endpoint: str) -> str:
        return endpoint.format(**self.path_params)


def _seed(dashtam: Server) -> Seeded:
    """One user with ``PROVIDERS`` sandbox providers, each connected and synced once."""
    base = f"http://127.0.0.1:{dashtam.port}/api/v1"
    credentials = {"email": f"reader-{secrets.token_hex(3)}@example.com", "password": PASSWORD}
    with httpx.Client(base_url=base, timeout=30) as http:
        http.post("/auth/register", json=credentials).raise_for_status()
        login = http.post("/auth/login", json=credentials)
        login.raise_for_status()
        token: str = login.json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        for number in range(PROVIDERS):
            created = http.post(
                "/providers", json={"provider_key": "sandbox", "alias": f"Brokerage {number + 1}"}
            )
            created.raise_for_status()
            _connect_and_sync(http, created.json()["id"])
        accounts = http.get("/accounts")
        accounts.raise_for_status()
    return Seeded(token, {"account_id": accounts.json()["items"][0]["id"]})


def _connect_and_sync(http: httpx.Client, provider_id: str) -> None:
    """Through the built-in sandbox's OAuth flow, as a browser would; then one sync."""
    started = http.post(f"/providers/{provider_id}/authorization")
    started.raise_for_status()
    with httpx.Client(timeout=30, follow_redirects=True) as browser:
        browser.get(started.json()["authorization_url"]).raise_for_status()
    sync = http.post(f"/providers/{provider_id}/syncs")
    sync.raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = http.get(f"/providers/{provider_id}/syncs/{sync.json()['id']}")
        state.raise_for_status()
        if state.json()["status"] == "succeeded":
            return
        if state.json()["status"] == "failed":
            raise SystemExit(f"the sandbox sync failed: {state.json()}")
        time.sleep(0.1)
    raise SystemExit("the sandbox sync did not finish within 60 s")


# -- the load generator ---------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection sending one GET at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def _request(path: str, token: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


@dataclass
class Round:
    """One app serving one endpoint for one round."""

    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_request: float
    client_cpu_us_per_request: float
    client_cpu_share: float  # of one core, over the round


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


async def _hammer(
    connections: list[Connection], request: bytes, seconds: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    until = time.perf_counter() + seconds

    async def loop(connection: Connection) -> None:
        nonlocal errors
        while (began := time.perf_counter()) < until:
            status, _ = await connection.get(request)
            latencies.append(time.perf_counter() - began)
            errors += status != 200

    await asyncio.gather(*(loop(c) for c in connections))
    return latencies, errors


async def _measure(server: Server, request: bytes, connections: int, seconds: float) -> Round:
    opened = [await Connection.open(server.port) for _ in range(connections)]
    try:
        await _hammer(opened, request, WARM_UP_S)
        cpu_before, client_before = server.cpu_s(), _client_cpu_s()
        began = time.perf_counter()
        latencies, errors = await _hammer(opened, request, seconds)
        wall = time.perf_counter() - began
        server_cpu, client_cpu = server.cpu_s() - cpu_before, _client_cpu_s() - client_before
    finally:
        for connection in opened:
            connection.close()
    latencies.sort()
    count = len(latencies)
    return Round(
        requests=count,
        errors=errors,
        seconds=wall,
        rps=count / wall,
        p50_ms=_percentile(latencies, 0.5) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        server_cpu_ms_per_request=server_cpu / count * 1000,
        client_cpu_us_per_request=client_cpu / count * 1e6,
        client_cpu_share=client_cpu / wall,
    )


def _client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _same_answers(servers: dict[str, Server], requests: dict[str, bytes]) -> None:
    for path, request in requests.items():
        bodies = {}
        for name, server in servers.items():
            connection = await Connection.open(server.port)
            status, bodies[name] = await connection.get(request)
            connection.close()
            if status != 200:
                raise SystemExit(f"{name} answered {status} to GET {path}: {bodies[name]!r}")
        if len(set(bodies.values())) != 1:
            shown = "\n".join(f"{name}: {body!r}" for name, body in bodies.items())
            raise SystemExit(f"GET {path}: the apps answer different bytes\n{shown}")


async def _run(
    servers: dict[str, Server], seeded: Seeded, args: argparse.Namespace
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    requests = {path: _request(seeded.path(path), seeded.token) for path in args.endpoints}
    await _same_answers(servers, requests)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        path: {name: [] for name in APPS} for path in args.endpoints
    }
    for number in range(args.rounds):
        for path, request in requests.items():
            for name in _support.rotated(APPS, number):
                measured = await _measure(servers[name], request, args.connections, args.duration)
                results[path][name].append(asdict(measured))
                print(
                    f"round {number + 1} {path} {name:<8} {measured.rps:7.0f} req/s"
                    f"  p50 {measured.p50_ms:6.1f} ms  p99 {measured.p99_ms:6.1f} ms"
                    f"  server {measured.server_cpu_ms_per_request:5.2f} ms/req"
                    f"  client {measured.client_cpu_share:4.0%} of a core"
                    f"  errors {measured.errors}",
                    flush=True,
                )
    return results


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # the client is then a little heavier: its CPU share shows it
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--endpoints", nargs="+", default=list(bare_app.LISTINGS), choices=list(bare_app.LISTINGS)
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--write", action="store_true", help="rewrite the docs section")
    args = parser.parse_args()
    from dashtam.core.embedded import EmbeddedPostgres
    from dashtam.migrate import upgrade_to_head

    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="dashtam-throughput-"))
    database = EmbeddedPostgres(workdir / "pg")
    try:
        database.start()
        database.ensure_database("dashtam")
        url = database.url("dashtam")
        upgrade_to_head(url)
        with _servers(workdir, url, args.connections) as servers:
            seeded = _seed(servers["dashtam"])
            _event_loop_policy()
            endpoints = asyncio.run(_run(servers, seeded, args))
    finally:
        database.stop()
        if os.environ.get("BENCHMARK_KEEP"):
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        **_support.options_of(args, "rounds", "duration", "connections"),
        "providers": PROVIDERS,
        "load_before": load_before[0],
        "load_after": os.getloadavg()[0],
        "cores": os.cpu_count(),
        "endpoints": endpoints,
    }
    if args.json:
        _support.write_report(args.json, report)
    if args.write:
        import report as page

        print(f"wrote {page.write_throughput_section(report)}")
    rounds = [r for per_app in endpoints.values() for rs in per_app.values() for r in rs]
    return 1 if any(r["errors"] for r in rounds) else 0


def ratios(result: dict[str, Any], path: str) -> tuple[float, float]:
    """Dashtam over bare, requests/s and p99: medians of the round-by-round ratios."""
    dashtam, bare = result["endpoints"][path]["dashtam"], result["endpoints"][path]["bare"]
    rps = statistics.median(d["rps"] / b["rps"] for d, b in zip(dashtam, bare, strict=True))
    p99 = statistics.median(d["p99_ms"] / b["p99_ms"] for d, b in zip(dashtam, bare, strict=True))
    return rps, p99


if __name__ == "__main__":
    raise SystemExit(main())
