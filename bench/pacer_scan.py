"""The pacer over many seeds of its virtual-time simulation: how much of a quota a command
holds and how many of its requests are answered 429, worst case and median.

The simulation is the one the pacer's unit tests use (`tests/unit/test_pacer.py`,
`simulate`): workers send through the pacer to an FCM whose quota is a token bucket or a
sliding one-second window, on a loaded client (stalls of 20-150 ms every 2 s or so, each
way up to 30% slower or faster; answers due while a request waits for its place in the
pace are read meanwhile). One seed is one first command (nothing learned) unless
`--learned`. A unit test can only pin a few seeds; this shows the spread.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.unit.test_pacer import simulate  # noqa: E402
from topic_sync.fcm.pacer import Quota  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota", type=float, default=700.0, help="FCM's quota, requests/s")
    parser.add_argument("--limiter", choices=["bucket", "sliding"], default="bucket")
    parser.add_argument("--max-rate", type=float, default=3000.0, help="--rate-limit")
    parser.add_argument("--latency-ms", default="50,100", help="comma-separated")
    parser.add_argument("--seeds", type=int, default=40, help="seeds 0..N-1 per latency")
    parser.add_argument("--in-flight", type=int, default=320, help="requests in flight")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--learned", action="store_true", help="start from the quota")
    args = parser.parse_args(argv)
    runs: list[tuple[float, float, float, int]] = []  # held, 429 share, latency, seed
    for latency_ms in (float(x) for x in args.latency_ms.split(",")):
        for seed in range(args.seeds):
            held, refused, _ = simulate(
                args.quota,
                latency_ms / 1000,
                limiter=args.limiter,
                concurrency=args.in_flight,
                requests=args.requests,
                max_rate=args.max_rate,
                start=Quota(args.quota, measured=True) if args.learned else None,
                stalls=random.Random(seed),
            )
            runs.append((held, refused, latency_ms, seed))
    held = sorted(r[0] for r in runs)
    refused = [r[1] for r in runs]
    print(f"{len(runs)} runs: {args.quota:g}/s {args.limiter}, --rate-limit {args.max_rate:g}")
    print(
        f"held: least {held[0]:.1%}, median {statistics.median(held):.1%}, "
        f"under 95% in {sum(h < 0.95 for h in held)}"
    )
    print(
        f"429s: median {statistics.median(refused):.2%}, most {max(refused):.2%}, "
        f"over 1% in {sum(r > 0.01 for r in refused)}"
    )
    worst = ", ".join(f"{h:.1%} ({ms:g} ms, seed {s})" for h, _, ms, s in sorted(runs)[:4])
    print(f"least held: {worst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
