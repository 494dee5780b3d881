#!/usr/bin/env python3
"""How many FCM operations would choosing the closest pool topic save?

topic-sync sends day D to pool topic `ordinal(D) % pool_size`, so a topic is re-synced from
the audience it held `pool_size` days ago. Issue: a run could instead pick, among the topics
not published within a rest period, the one whose members are closest to today's audience.
This script counts operations (additions + removals) for both rules on synthetic 30-day
audience series; it needs neither PostgreSQL nor FCM:

    python bench/pool_choice.py --audience 100000 --days 30 --pool 7 --churn 0.05 0.2

Models (each a seeded random series; `--churn` is the share replaced per day):
- walk: each day replaces `churn` of yesterday's audience with users drawn from the whole
  user base (which is 5x the audience), so differences compound with distance in days;
- weekly: as walk, plus a weekday segment (a fixed 30% of each weekday's audience that is
  the same every week), the shape recommendation audiences often have.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator

REST_DAYS = 1  # the default rest period (24 h): yesterday's topic may still be fanning out


def walk(size: int, days: int, churn: float, rng: random.Random) -> Iterator[set[int]]:
    base = 5 * size
    today = set(rng.sample(range(base), size))
    for _ in range(days):
        yield today
        leaving = set(rng.sample(sorted(today), int(churn * size)))
        pool = [u for u in rng.sample(range(base), 2 * size) if u not in today]
        today = (today - leaving) | set(pool[: len(leaving)])


def weekly(size: int, days: int, churn: float, rng: random.Random) -> Iterator[set[int]]:
    segment = int(0.3 * size)
    weekday_sets = [
        set(range(10 * size + d * segment, 10 * size + (d + 1) * segment)) for d in range(7)
    ]
    for day, core in enumerate(walk(size - segment, days, churn, rng)):
        yield core | weekday_sets[day % 7]


def modulo(series: list[set[int]], pool: int) -> int:
    topics: list[set[int]] = [set() for _ in range(pool)]
    ops = 0
    for day, audience in enumerate(series):
        slot = day % pool
        ops += len(audience ^ topics[slot])
        topics[slot] = audience
    return ops


def closest(series: list[set[int]], pool: int) -> int:
    topics: list[set[int]] = [set() for _ in range(pool)]
    last_used = [-(10**9)] * pool
    ops = 0
    for day, audience in enumerate(series):
        resting = [t for t in range(pool) if day - last_used[t] > REST_DAYS]
        slot = min(resting, key=lambda t: (len(audience ^ topics[t]), t))
        ops += len(audience ^ topics[slot])
        topics[slot], last_used[slot] = audience, day
    return ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audience", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--pool", type=int, default=7)
    parser.add_argument("--churn", type=float, nargs="+", default=[0.05, 0.2])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{args.days} days, audience {args.audience:,}, pool {args.pool}, rest {REST_DAYS} day")
    print()
    print("| model | churn/day | ops, ordinal % pool | ops, closest resting topic | saving |")
    print("|---|---|---|---|---|")
    for name, model in (("walk", walk), ("weekly", weekly)):
        for churn in args.churn:
            series = list(model(args.audience, args.days, churn, random.Random(args.seed)))
            a, b = modulo(series, args.pool), closest(series, args.pool)
            print(f"| {name} | {churn:.0%} | {a:,} | {b:,} | {1 - b / a:.0%} |")


if __name__ == "__main__":
    main()
