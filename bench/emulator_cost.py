"""The local FCM emulator's own CPU per request, over real HTTP.

At 3,000 requests/s the emulator shares the benchmark machine's CPUs with the client and
PostgreSQL: what it spends per request is taken from the client a quota cell measures. This
serves it v1 subscribe requests from a separate process (topic-sync's own client with
`--connections` keep-alive connections, each sending its next request when the last is
answered; the first 1,000 of `--requests` warm it up) and reports the
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

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
sys.path.insert(0, str(REPO_ROOT))

from topic_sync.emulator import FcmEmulator  # noqa: E402

# The client: topic-sync's own HTTP/1.1 client, as v1-direct runs it, driven the way
# bench/http_clients.py drives it (its warm-up requests included).
CLIENT = (
    "import asyncio, sys; sys.path.insert(0, sys.argv[1]); "
    "from http_clients import own, _paths; "
    "asyncio.run(own(sys.argv[2], _paths(int(sys.argv[3])), int(sys.argv[4])))"
)


def one_run(requests: int, connections: int, latency: float) -> tuple[float, float, float]:
    """(user µs, system µs) of this process per request, and requests answered per second."""
    with FcmEmulator() as emulator:
        emulator.set_latency(latency)
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        base = f"http://127.0.0.1:{emulator.port}"
        subprocess.run(
            [sys.executable, "-c", CLIENT, str(BENCH), base, str(requests), str(connections)],
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
