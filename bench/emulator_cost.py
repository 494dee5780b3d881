"""The local FCM emulator's own CPU per request, over real HTTP.

At 3,000 requests/s the emulator shares the benchmark machine's CPUs with the client and
PostgreSQL: what it spends per request is taken from the client a quota cell measures. This
serves it v1 subscribe requests from a separate process (`--connections` keep-alive
connections, each sending its next request when the last is answered) and reports the
emulator process's CPU per request (user and system), and the requests/s it answered;
medians over `--runs` runs, each against a fresh emulator in this process.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from topic_sync.emulator import FcmEmulator  # noqa: E402

# The client: raw keep-alive connections in threads, the header fields firebase-admin sends.
CLIENT = r"""
import socket, sys, threading
port, count, connections = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def connection(first):
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    answers = conn.makefile("rb")
    body = b'{}'
    for n in range(first, count, connections):
        path = f"/v1/projects/p/registrations/token-{n:08d}-{'x' * 140}/topicSubscriptions"
        conn.sendall(
            f"POST {path}?topic_name=t HTTP/1.1\r\nHost: fcm.googleapis.com\r\n"
            "Authorization: Bearer token\r\nContent-Type: application/json\r\n"
            "User-Agent: client\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\n"
            f"Connection: keep-alive\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
        length = 0
        while (line := answers.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        answers.read(length)

threads = [threading.Thread(target=connection, args=(k,)) for k in range(connections)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def one_run(requests: int, connections: int, latency: float) -> tuple[float, float, float]:
    """(user µs, system µs) of this process per request, and requests answered per second."""
    with FcmEmulator() as emulator:
        emulator.set_latency(latency)
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        subprocess.run(
            [sys.executable, "-c", CLIENT, str(emulator.port), str(requests), str(connections)],
            check=True,
        )
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        if emulator.stats[("subscribe", 200)] != requests:
            raise SystemExit(f"the emulator answered {emulator.stats} of {requests} subscribes")
    user = (after.ru_utime - before.ru_utime) / requests * 1e6
    system = (after.ru_stime - before.ru_stime) / requests * 1e6
    return user, system, requests / wall


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=320, help="as v1-direct opens")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    runs = [
        one_run(args.requests, args.connections, args.latency_ms / 1000) for _ in range(args.runs)
    ]
    user, system, rate = (statistics.median(r[i] for r in runs) for i in range(3))
    print(
        f"{args.requests:,} subscribes over {args.connections} connections, "
        f"{args.latency_ms:g} ms latency, median of {args.runs} runs: "
        f"{user + system:.0f} µs of emulator CPU a request (user {user:.0f}, system "
        f"{system:.0f}), {rate:,.0f} requests/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
