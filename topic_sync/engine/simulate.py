"""What a pool size and policy would have cost over an operator's own past audiences.

Each audience file, dated by its name, is one day's run: read with run's audience reader,
staged, its topic chosen and its diff planned by the very statements and rule a live run
uses (store.stage_audience, engine.choice, store.plan_topic), then settled as if FCM did
all the work and the message went out at the campaign's run time. The chosen policy and
the ordinal rule replay side by side, each on its own topics. Everything happens in
temporary copies of the job's tables (store.simulation) in one transaction that is rolled
back: the job's state is never touched. Every token counts as alive (no FCM answers are
replayed), so the figures are the operations of the audiences themselves.
"""

from __future__ import annotations

import datetime as dt
import glob
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from topic_sync import store
from topic_sync.engine.choice import choose
from topic_sync.errors import BadInput, InputFileError
from topic_sync.inputs.audience import iter_audience
from topic_sync.pool import PoolPolicy, Why, validate_pool

__all__ = ["AudienceFile", "DayCost", "Simulation", "SimulatedDay", "audience_history", "simulate"]

_DATE_IN_NAME = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class AudienceFile:
    day: dt.date
    path: Path


def date_in_name(name: str) -> dt.date | None:
    """The first date a file name holds (YYYY-MM-DD or YYYYMMDD), if any."""
    for match in _DATE_IN_NAME.finditer(name):
        try:
            return dt.date(*(int(part) for part in match.groups()))
        except ValueError:
            continue
    return None


def audience_history(sources: Sequence[str]) -> tuple[list[AudienceFile], list[Path]]:
    """The audience files of files, folders and globs, by date; and the files of folders
    and globs passed over for having no date in their name. A file named on its own must
    have one, and a date may have only one file."""
    found: list[tuple[Path, bool]] = []  # (path, named on its own)
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found += [(p, False) for p in sorted(path.iterdir()) if p.is_file()]
        elif path.is_file():
            found.append((path, True))
        elif _GLOB.search(source):
            matches = sorted(Path(p) for p in glob.glob(source) if Path(p).is_file())
            if not matches:
                raise BadInput(f"{source}: no file matches")
            found += [(p, False) for p in matches]
        else:
            raise InputFileError(source, "no such file or folder")
    days: dict[dt.date, Path] = {}
    passed_over = []
    for path, named in found:
        day = date_in_name(path.name)
        if day is None:
            if named:
                raise InputFileError(
                    path, "no date in its name (YYYY-MM-DD or YYYYMMDD): each file is a day"
                )
            passed_over.append(path)
            continue
        if day in days and days[day] != path:
            raise BadInput(f"{days[day]} and {path} are both audiences of {day}: keep one")
        days[day] = path
    if not days:
        raise BadInput(
            "no audience file with a date in its name (YYYY-MM-DD or YYYYMMDD) in "
            + ", ".join(sources)
        )
    return [AudienceFile(day, days[day]) for day in sorted(days)], passed_over


@dataclass(frozen=True)
class DayCost:
    """One policy's day: the topic it synced, and the operations that took."""

    topic: str
    to_add: int
    to_remove: int
    why: Why

    @property
    def operations(self) -> int:
        return self.to_add + self.to_remove


@dataclass(frozen=True)
class SimulatedDay:
    day: dt.date
    path: Path
    audience: int  # distinct tokens
    costs: dict[PoolPolicy, DayCost]


@dataclass(frozen=True)
class Simulation:
    prefix: str
    pool_size: int
    policy: PoolPolicy  # the one asked for; the ordinal rule is replayed beside it
    rest: dt.timedelta
    quota: float  # FCM topic-management requests per second
    days: list[SimulatedDay] = field(default_factory=list)

    @property
    def policies(self) -> tuple[PoolPolicy, ...]:
        return _policies(self.policy)

    def total(self, policy: PoolPolicy) -> int:
        return sum(d.costs[policy].operations for d in self.days)

    def seconds(self, operations: int) -> float:
        """At least this long at the quota: one request per token on FCM's v1 API."""
        return operations / self.quota

    def summary(self) -> dict[str, Any]:
        def cost(c: DayCost) -> dict[str, Any]:
            return {
                "topic": c.topic,
                "to_add": c.to_add,
                "to_remove": c.to_remove,
                "operations": c.operations,
                "seconds": round(self.seconds(c.operations), 3),
                "why": str(c.why),
            }

        totals = {
            str(p): {
                "operations": self.total(p),
                "seconds": round(self.seconds(self.total(p)), 3),
            }
            for p in self.policies
        }
        ordinal = self.total(PoolPolicy.ORDINAL)
        return {
            "kind": "simulate",
            "prefix": self.prefix,
            "pool_size": self.pool_size,
            "policy": str(self.policy),
            "rest_seconds": self.rest.total_seconds(),
            "quota": self.quota,
            "days": [
                {
                    "date": d.day.isoformat(),
                    "file": str(d.path),
                    "audience": d.audience,
                    **{str(p): cost(d.costs[p]) for p in self.policies},
                }
                for d in self.days
            ],
            "totals": totals,
            "ratio": round(self.total(self.policy) / ordinal, 4) if ordinal else None,
        }


def _policies(policy: PoolPolicy) -> tuple[PoolPolicy, ...]:
    return (policy,) if policy is PoolPolicy.ORDINAL else (policy, PoolPolicy.ORDINAL)


def simulate(
    engine: Engine,
    files: Sequence[AudienceFile],
    *,
    prefix: str,
    pool_size: int,
    policy: PoolPolicy,
    rest: dt.timedelta,
    quota: float,
    run_at: dt.time,
    zone: dt.tzinfo,
    token_column: str | None = None,
    log: Callable[[str], None] = lambda _line: None,
) -> Simulation:
    """Replay the files, one day each, in date order (see the module's docstring)."""
    validate_pool(prefix, pool_size)
    result = Simulation(prefix, pool_size, policy, rest, quota)
    with engine.connect() as conn:
        try:
            store.shadow_tables(conn)
            for audience in files:
                tokens = iter_audience(audience.path, token_column=token_column)
                lines = store.load_audience(conn, tokens)
                staged = store.stage_audience(conn, lines, audience.day)
                at = dt.datetime.combine(audience.day, run_at, zone)
                costs = {}
                for replayed in result.policies:
                    own = f"{replayed}-{prefix}"  # each policy's replay on topics of its own
                    choice = choose(
                        conn,
                        prefix=own,
                        pool_size=pool_size,
                        day=audience.day,
                        policy=replayed,
                        rest=rest,
                        recorded=None,
                        now=at,
                    )
                    plan = store.plan_topic(conn, choice.topic, None, lines, staged=staged)
                    store.settle_simulated_day(conn, choice.topic, at)
                    slot = choice.topic.removeprefix(own)
                    costs[replayed] = DayCost(
                        f"{prefix}{slot}", plan.to_add, plan.to_remove, choice.why
                    )
                store.drop_staged_audience(conn)
                day = SimulatedDay(audience.day, audience.path, staged.size, costs)
                result.days.append(day)
                log(
                    f"{audience.day}: {staged.size:,} tokens; "
                    + ", ".join(
                        f"{p} {c.topic} {c.operations:,} operations" for p, c in costs.items()
                    )
                )
        finally:
            conn.rollback()
    return result
