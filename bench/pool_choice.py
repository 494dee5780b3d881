#!/usr/bin/env python3
"""Operations a pool policy costs over a series of daily audiences, next to the ordinal rule.

Each day a run syncs one pool topic to the day's audience: its operations are the
subscribes plus unsubscribes, |audience ^ members|. `ordinal` uses topic `day % pool`;
`cost` asks topic_sync.pool.choose_topic (the code `run` uses) with every topic's cost,
whether it was ever used and when it was last published to (each day's run at the same
hour, so yesterday's topic has rested 24 h). Needs neither PostgreSQL nor FCM:

    python bench/pool_choice.py --audience 20000 --days 30 --pool 7 --seeds 1 2 3

Prints, per series (bench/pool_series.py), the operations of both policies and their ratio
(median over the seeds, and the worst seed), and checks the targets: at most 0.5x the
ordinal rule on the 20% walk, at most 1.02x on every series. Exit 1 if one is missed.
With `--pool-sizes 2 3 7 14`, also the cost policy's operations at each pool size as a
share of the ordinal rule's with a pool of 7 (the configuration recommended before).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the checkout's topic_sync

from pool_series import REST, by_pool_size, compare, missed_targets  # noqa: E402  (beside it)

from topic_sync.dates import format_duration  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--audience", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--pool", type=int, default=7)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--pool-sizes", type=int, nargs="*", default=[])
    args = parser.parse_args()
    ratios = compare(args.audience, args.days, args.pool, args.seeds)
    print(
        f"{args.days} days, audience {args.audience:,}, pool {args.pool}, "
        f"rest {format_duration(REST.total_seconds())}, "
        f"seeds {' '.join(map(str, args.seeds))}"
    )
    print()
    print("| series | cost ÷ ordinal, median | worst seed |")
    print("|---|---|---|")
    for name, r in ratios.items():
        print(f"| {name} | {statistics.median(r):.3f} | {max(r):.3f} |")
    missed = missed_targets(ratios)
    print()
    print("targets: " + ("met" if not missed else "MISSED: " + "; ".join(missed)))
    if args.pool_sizes:
        shares = by_pool_size(args.audience, args.days, args.pool_sizes, args.seeds)
        print()
        print("cost policy by pool size, ÷ the ordinal rule with a pool of 7 (median of seeds):")
        print()
        print("| series | " + " | ".join(f"pool {p}" for p in args.pool_sizes) + " |")
        print("|---|" + "---|" * len(args.pool_sizes))
        for name, per_pool in shares.items():
            cells = " | ".join(f"{statistics.median(per_pool[p]):.3f}" for p in args.pool_sizes)
            print(f"| {name} | {cells} |")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
