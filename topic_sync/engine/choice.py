"""Which pool topic a date uses: the one it was planned on, else the policy's pick.

The choice is made once per campaign and date, in the plan's transaction, once the audience
is staged: each pool topic's cost is one set-based query (store.pool_costs), and the rule
is topic_sync.pool's. The run row records the topic, and every rerun of the date reads it
back (store.recorded_topic): a date never picks again, even when the costs changed since.
`run` and `simulate` both choose here, so a simulation costs what a run would do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from topic_sync import store
from topic_sync.pool import (
    ORDINAL_MARGIN,
    Candidate,
    PoolPolicy,
    Why,
    decide_topic,
    is_resting,
    pool_topics,
)
from topic_sync.pool import topic_for as ordinal_topic

__all__ = ["TopicChoice", "choose", "explain"]


@dataclass(frozen=True)
class TopicChoice:
    """The date's topic, and why: each pool topic's cost when they were computed."""

    topic: str
    policy: PoolPolicy
    why: Why
    costs: tuple[store.TopicCost, ...] = ()  # empty when nothing needed them
    now: dt.datetime | None = None  # when the rest period was judged
    rest: dt.timedelta | None = None

    def resting(self, cost: store.TopicCost) -> bool:
        if self.now is None or self.rest is None:
            return True
        candidate = Candidate(cost.topic, cost.operations, cost.used, cost.last_published)
        return is_resting(candidate, self.now, self.rest)

    def chosen_cost(self) -> store.TopicCost | None:
        return next((c for c in self.costs if c.topic == self.topic), None)

    def summary(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "policy": str(self.policy),
            "why": str(self.why),
            "reason": explain(self),
            "rest_seconds": self.rest.total_seconds() if self.rest is not None else None,
            "topics": [
                {
                    "topic": c.topic,
                    "to_add": c.to_add,
                    "to_remove": c.to_remove,
                    "operations": c.operations,
                    "used": c.used,
                    "last_published": (
                        c.last_published.isoformat(timespec="seconds") if c.last_published else None
                    ),
                    "resting": self.resting(c),
                }
                for c in self.costs
            ],
        }


def choose(
    conn: Connection,
    *,
    prefix: str,
    pool_size: int,
    day: dt.date,
    policy: PoolPolicy,
    rest: dt.timedelta,
    recorded: str | None,
    explain: bool = False,
    now: dt.datetime | None = None,
) -> TopicChoice:
    """The date's topic, over the staged audience (store.stage_audience).

    A topic the date was already planned on (`recorded`) is kept if it is still in the
    pool (a prefix or pool size changed since makes the date pick again). Otherwise the
    ordinal policy takes the date's ordinal topic, and the cost policy asks
    topic_sync.pool.decide_topic, judging the rest period at `now` (the database's clock
    unless given: publishes are stamped by it). With `explain`, every topic's cost is
    computed even when the choice does not need it (a dry run shows them).
    """
    topics = pool_topics(prefix, pool_size)
    ordinal = ordinal_topic(prefix, pool_size, day)
    cost_policy = policy is PoolPolicy.COST
    costs = store.pool_costs(conn, topics) if explain or cost_policy else []
    if costs and now is None:
        now = store.db_now(conn)
    fixed = recorded if recorded in topics else ordinal if not cost_policy else None
    if fixed is not None:
        why = Why.RECORDED if fixed == recorded else Why.ORDINAL
        return TopicChoice(fixed, policy, why, tuple(costs), now, rest)
    assert now is not None
    candidates = [Candidate(c.topic, c.operations, c.used, c.last_published) for c in costs]
    chosen, why = decide_topic(candidates, ordinal_topic=ordinal, now=now, rest=rest)
    return TopicChoice(chosen.topic, policy, why, tuple(costs), now, rest)


def explain(choice: TopicChoice) -> str:
    """Why the date has its topic, in a sentence for people."""
    chosen = choice.chosen_cost()
    ops = f" ({chosen.operations:,} operations)" if chosen is not None else ""
    if choice.why is Why.RECORDED:
        return f"the topic this date was planned on{ops}: a rerun never picks again"
    if choice.why is Why.ORDINAL:
        return f"the date's ordinal topic{ops} (pool policy ordinal)"
    if choice.why is Why.NEVER_USED:
        return f"never used yet{ops}: the cost policy fills unused topics first"
    others = [c for c in choice.costs if c.topic != choice.topic and choice.resting(c)]
    best = min(others, key=lambda c: c.operations, default=None)
    after = f"; next {best.topic} with {best.operations:,}" if best else ""
    if choice.why is Why.NEAR_TIE:
        return (
            f"the date's ordinal topic{ops}, within {ORDINAL_MARGIN:.0%} of the cheapest "
            f"resting one{after}"
        )
    return f"the cheapest resting topic{ops}{after}"
