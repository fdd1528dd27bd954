"""Is Dashtam still answering while it hashes passwords? ``/health/live`` during a burst.

Starts ``dashtam serve`` (one worker, development mode, its embedded PostgreSQL in a temp dir)
with the production argon2id cost (64 MiB, 3 passes), then sends ``--burst`` registrations at
once and probes ``/health/live`` every 10 ms until they are all answered. Prints the probes'
latency when idle and during the burst. With hashing on the event loop, a probe waits for
whole hashes (about a second for three); off the loop it waits for none.

    .venv/bin/python benchmarks/hashing.py [--burst 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time

import _support
import httpx

PASSWORD = "correct horse battery staple"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _probe(http: httpx.AsyncClient) -> float:
    sent = time.perf_counter()
    (await http.get("/health/live")).raise_for_status()
    return time.perf_counter() - sent


async def _measure(base: str, burst: int) -> tuple[list[float], list[float]]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        idle = []
        for _ in range(20):
            idle.append(await _probe(http))
            await asyncio.sleep(0.01)

        async def register(number: int) -> None:
            body = {"email": f"burst-{number}-{secrets.token_hex(3)}@example.com"}
            answer = await http.post("/api/v1/auth/register", json={**body, "password": PASSWORD})
            answer.raise_for_status()

        registrations = asyncio.ensure_future(asyncio.gather(*(register(n) for n in range(burst))))
        during = []
        while not registrations.done():
            during.append(await _probe(http))
            await asyncio.sleep(0.01)
        await registrations
        return idle, during


def _ms(values: list[float], fraction: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=3)
    args = parser.parse_args()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASHTAM_", "PGHARNESS_"))}
    env.pop("DATABASE_URL", None)
    env["DASHTAM_REGISTER_MAX_PER_ADDRESS"] = "100000"
    with tempfile.TemporaryDirectory(prefix="dashtam-hashing-") as workdir:
        server = subprocess.Popen(
            [sys.executable, "-m", "dashtam.cli", "serve", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _support.wait_until_ready(base, server, 120)
            idle, during = asyncio.run(_measure(base, args.burst))
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"/health/live idle: p50 {_ms(idle, 0.5)} ms, max {_ms(idle, 1.0)} ms")
    print(
        f"/health/live during {args.burst} registrations (argon2id 64 MiB x 3): "
        f"{len(during)} probes, p50 {_ms(during, 0.5)} ms, max {_ms(during, 1.0)} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
