"""Synthetic audience series, and the operations a pool policy costs over them.

Each generator is seeded and yields `days` items: the day's audience, or None for a day
without a run (a paused campaign). Ids stand for tokens; only set differences matter.
The shapes are the ones issue reports and operators describe:

- walk: each day replaces `churn` of yesterday's audience with users from a user base five
  times its size (a recommender's pick drifting day by day);
- weekly: a walk plus a segment of 30% that is the same every week on the same weekday;
- weekend: one walking audience on weekdays, another on Saturdays and Sundays;
- alternating: two walking audiences taking turns day by day;
- growth / shrink: a walk whose size changes by `rate` a day;
- one-off: a walk with one day of a wholly different, three times larger audience;
- pause: a walk whose campaign does not run for a week and comes back to the drifted audience.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator

from topic_sync.config.table import DEFAULTS
from topic_sync.pool import Candidate, PoolPolicy, choose_topic

Series = list[set[int] | None]


def walk(size: int, days: int, churn: float, rng: random.Random, *, base: int = 5) -> Series:
    population = base * size
    today = set(rng.sample(range(population), size))
    out: Series = []
    for _ in range(days):
        out.append(today)
        leaving = set(rng.sample(sorted(today), int(churn * len(today))))
        joining: set[int] = set()
        while len(joining) < len(leaving):
            user = rng.randrange(population)
            if user not in today:
                joining.add(user)
        today = (today - leaving) | joining
    return out


def _shifted(series: Series, offset: int) -> Series:
    return [None if s is None else {u + offset for u in s} for s in series]


def weekly(
    size: int, days: int, churn: float, rng: random.Random, *, segment: float = 0.3
) -> Series:
    width = int(segment * size)
    weekday = [set(range(10 * size + d * width, 10 * size + (d + 1) * width)) for d in range(7)]
    core = walk(size - width, days, churn, rng)
    return [(c or set()) | weekday[day % 7] for day, c in enumerate(core)]


def weekend(size: int, days: int, churn: float, rng: random.Random) -> Series:
    weekdays = walk(size, days, churn, rng)
    weekends = _shifted(walk(size, days, churn, random.Random(rng.random())), 50 * size)
    return [weekends[d] if d % 7 in (5, 6) else weekdays[d] for d in range(days)]


def alternating(size: int, days: int, churn: float, rng: random.Random) -> Series:
    odd = walk(size, days, churn, rng)
    even = _shifted(walk(size, days, churn, random.Random(rng.random())), 50 * size)
    return [odd[d] if d % 2 else even[d] for d in range(days)]


def sized(size: int, days: int, churn: float, rng: random.Random, *, rate: float) -> Series:
    population = 200 * size
    today = set(rng.sample(range(population), size))
    out: Series = []
    for _ in range(days):
        out.append(today)
        target = max(1, int(len(today) * (1 + rate)))
        today = today - set(rng.sample(sorted(today), int(churn * len(today))))
        while len(today) > target:
            today.pop()
        while len(today) < target:
            today.add(rng.randrange(population))
    return out


def one_off(size: int, days: int, churn: float, rng: random.Random, *, day: int = 15) -> Series:
    out = walk(size, days, churn, rng)
    out[min(day, days - 1)] = set(range(100 * size, 103 * size))
    return out


def pause(size: int, days: int, churn: float, rng: random.Random, *, start: int = 12) -> Series:
    out = walk(size, days, churn, rng)
    return [None if start <= d < start + 7 else s for d, s in enumerate(out)]


Generator = Callable[[int, int, random.Random], Series]

SERIES: dict[str, Generator] = {
    "walk 5%": lambda n, d, r: walk(n, d, 0.05, r),
    "walk 20%": lambda n, d, r: walk(n, d, 0.2, r),
    "walk 50%": lambda n, d, r: walk(n, d, 0.5, r),
    "weekly 5%": lambda n, d, r: weekly(n, d, 0.05, r),
    "weekly 12%": lambda n, d, r: weekly(n, d, 0.12, r),
    "weekly 20%": lambda n, d, r: weekly(n, d, 0.2, r),
    "weekend 5%": lambda n, d, r: weekend(n, d, 0.05, r),
    "alternating 10%": lambda n, d, r: alternating(n, d, 0.1, r),
    "growth 3%/day": lambda n, d, r: sized(n, d, 0.05, r, rate=0.03),
    "shrink 3%/day": lambda n, d, r: sized(n, d, 0.05, r, rate=-0.03),
    "one-off day": lambda n, d, r: one_off(n, d, 0.2, r),
    "pause": lambda n, d, r: pause(n, d, 0.2, r),
}
"""Every series the policy comparison runs, by name."""


def days_of(series: Series) -> Iterator[tuple[int, set[int]]]:
    """(day number, audience) of the days that have a run."""
    return ((day, audience) for day, audience in enumerate(series) if audience is not None)


START = dt.datetime(2026, 1, 5, 6, 0, tzinfo=dt.UTC)  # a Monday, 06:00
TARGET_WALK_20 = 0.5
TARGET_EVERY = 1.02


REST = dt.timedelta(seconds=DEFAULTS.rest_period)  # run's default


def operations(series: Series, pool: int, policy: PoolPolicy, rest: dt.timedelta = REST) -> int:
    """Total subscribes + unsubscribes of the series under a policy."""
    names = [f"t-{slot}" for slot in range(pool)]
    members: dict[str, set[int]] = {name: set() for name in names}
    used: set[str] = set()
    published: dict[str, dt.datetime] = {}
    total = 0
    for day, audience in days_of(series):
        now = START + dt.timedelta(days=day)
        ordinal = names[day % pool]
        if policy is PoolPolicy.ORDINAL:
            topic = ordinal
        else:
            candidates = [
                Candidate(name, len(audience ^ members[name]), name in used, published.get(name))
                for name in names
            ]
            topic = choose_topic(candidates, ordinal_topic=ordinal, now=now, rest=rest).topic
        total += len(audience ^ members[topic])
        members[topic], published[topic] = audience, now
        used.add(topic)
    return total


def compare(size: int, days: int, pool: int, seeds: list[int]) -> dict[str, list[float]]:
    """Per series, the cost policy's operations as a share of the ordinal rule's, per seed."""
    ratios: dict[str, list[float]] = {}
    for name, make in SERIES.items():
        for seed in seeds:
            series = make(size, days, random.Random(seed))
            ordinal = operations(series, pool, PoolPolicy.ORDINAL)
            cost = operations(series, pool, PoolPolicy.COST)
            ratios.setdefault(name, []).append(cost / ordinal)
    return ratios


def by_pool_size(
    size: int, days: int, pools: list[int], seeds: list[int], *, baseline: int = 7
) -> dict[str, dict[int, list[float]]]:
    """Per series and pool size, the cost policy's operations as a share of the ordinal
    rule's with a pool of `baseline` (the configuration recommended before), per seed."""
    shares: dict[str, dict[int, list[float]]] = {}
    for name, make in SERIES.items():
        for seed in seeds:
            series = make(size, days, random.Random(seed))
            before = operations(series, baseline, PoolPolicy.ORDINAL)
            for pool in pools:
                share = operations(series, pool, PoolPolicy.COST) / before
                shares.setdefault(name, {}).setdefault(pool, []).append(share)
    return shares


def missed_targets(ratios: dict[str, list[float]]) -> list[str]:
    missed = [
        f"{name}: worst {max(r):.3f} > {TARGET_EVERY}"
        for name, r in ratios.items()
        if max(r) > TARGET_EVERY
    ]
    if max(ratios["walk 20%"]) > TARGET_WALK_20:
        missed.append(f"walk 20%: worst {max(ratios['walk 20%']):.3f} > {TARGET_WALK_20}")
    return missed
