#!/usr/bin/env python3
"""Client CPU per request of the HTTP clients the v1-direct transport could run on.

    .venv/bin/python bench/http_clients.py --requests 6000 --in-flight 100

Starts the FCM emulator in its own process (its CPU is not counted), then sends the same v1
subscribe request (POST, `{}` body, keep-alive) `--requests` times with `--in-flight` at once
through each client, after a warm-up of 1000, and prints this process's CPU per request and
the requests per second: topic-sync's own client (topic_sync/fcm/http1.py, what v1-direct
runs on) and httpx's AsyncClient over HTTP/1.1 (a kept library; its HTTP/2 needs TLS and a
server that speaks it, which the emulator does not). The transport's budget is 1.5x the own
client's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from topic_sync.fcm.http1 import Pool  # noqa: E402

WARM_UP = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _paths(count: int) -> list[str]:
    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits
    tokens = ("".join(rng.choices(alphabet, k=152)) for _ in range(count))
    return [f"/v1/projects/bench/registrations/{t}/topicSubscriptions?topic_name=b" for t in tokens]


async def _measure(
    send: Callable[[str], Awaitable[int]], paths: list[str], in_flight: int
) -> tuple[float, float]:
    slots = asyncio.Semaphore(in_flight)

    async def one(path: str) -> None:
        async with slots:
            status = await send(path)
            assert status in (200, 409), status  # 409: already subscribed

    await asyncio.gather(*(one(p) for p in paths[:WARM_UP]))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(p) for p in paths[WARM_UP:]))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = len(paths) - WARM_UP
    return cpu * 1000 / done, done / wall


async def own(base: str, paths: list[str], in_flight: int) -> tuple[float, float]:
    pool = Pool(base, in_flight)
    head = f"Host: {pool.host_header}\r\nAuthorization: Bearer owner\r\n"
    head += "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    async def send(path: str) -> int:
        request = f"POST {path} HTTP/1.1\r\n{head}".encode("latin-1")
        async with pool.turn():
            return (await pool.request(request, 30)).status

    try:
        return await _measure(send, paths, in_flight)
    finally:
        pool.close()


async def httpx_h1(base: str, paths: list[str], in_flight: int) -> tuple[float, float]:
    import httpx

    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, follow_redirects=False, timeout=30
    ) as client:
        headers = {"Authorization": "Bearer owner", "Content-Type": "application/json"}

        async def send(path: str) -> int:
            return (await client.post(path, content=b"{}", headers=headers)).status_code

        return await _measure(send, paths, in_flight)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--in-flight", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    emulator = subprocess.Popen(
        [sys.executable, "-m", "topic_sync.cli", "emulator", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):  # up to 30 s for the emulator to listen
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/emulator/state", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        paths = _paths(WARM_UP + args.requests)
        for name, client in (("own (http1.py)", own), ("httpx HTTP/1.1", httpx_h1)):
            ms, rate = asyncio.run(client(base, paths, args.in_flight))
            print(f"{name:<16} {ms:.3f} ms CPU/request  {rate:,.0f} requests/s")
    finally:
        emulator.terminate()
        emulator.wait(10)


if __name__ == "__main__":
    main()
