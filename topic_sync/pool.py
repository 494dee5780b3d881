"""The rotating topic pool: its topic names, and which topic a day uses.

A token may be in at most 2000 topics and topics cannot be thrown away, so a fixed pool is
reused. Topic names are PREFIX-<slot>. Which slot a day uses is a policy (`PoolPolicy`):
`ordinal` takes the date's ordinal modulo the pool size; `cost` (the default) takes the
resting topic whose members are closest to the day's audience (`choose_topic`), so a day
costs what the day changed. Either way the choice is made once per date and recorded, so
every rerun of a day lands on the same topic. This module is the one place that knows the
rules.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from topic_sync.dates import format_duration
from topic_sync.errors import BadInput
from topic_sync.fcm.wire import MAX_TOPICS_PER_TOKEN, TOPIC_NAME_PATTERN

__all__ = [
    "MAX_TOPICS_PER_TOKEN",
    "ORDINAL_MARGIN",
    "TOPIC_NAME_RE",
    "Candidate",
    "NoRestingTopic",
    "PoolPolicy",
    "Why",
    "choose_topic",
    "decide_topic",
    "is_resting",
    "is_pool_topic",
    "pool_topics",
    "prefix_of",
    "slot_for",
    "topic_for",
    "validate_pool",
]

TOPIC_NAME_RE = re.compile(TOPIC_NAME_PATTERN)
_SEPARATOR = "-"


def validate_pool(prefix: str, pool_size: int) -> None:
    """Refuse a prefix or pool size FCM would reject, before anything runs."""
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise BadInput(f"pool size must be a whole number of at least 1, not {pool_size!r}")
    if pool_size > MAX_TOPICS_PER_TOKEN:
        raise BadInput(
            f"pool size {pool_size} is over FCM's limit of {MAX_TOPICS_PER_TOKEN} topics per token"
        )
    if not prefix:
        raise BadInput("topic prefix must not be empty")
    if prefix.startswith("/topics/"):
        raise BadInput(f"topic prefix {prefix!r}: give the bare name, without '/topics/'")
    longest = f"{prefix}{_SEPARATOR}{pool_size - 1}"
    if not TOPIC_NAME_RE.fullmatch(longest):
        raise BadInput(
            f"topic prefix {prefix!r} breaks FCM's topic-name rule "
            "(1 to 900 characters of A-Z a-z 0-9 - _ . ~ %)"
        )


def slot_for(day: dt.date, pool_size: int) -> int:
    return day.toordinal() % pool_size


def topic_for(prefix: str, pool_size: int, day: dt.date) -> str:
    validate_pool(prefix, pool_size)
    return f"{prefix}{_SEPARATOR}{slot_for(day, pool_size)}"


def pool_topics(prefix: str, pool_size: int) -> list[str]:
    validate_pool(prefix, pool_size)
    return [f"{prefix}{_SEPARATOR}{slot}" for slot in range(pool_size)]


def prefix_of(topic: str) -> str:
    """The prefix of a pool topic (the topic itself if it is not PREFIX-<slot>)."""
    head, _, slot = topic.rpartition(_SEPARATOR)
    return head if head and slot.isdigit() else topic


def is_pool_topic(prefix: str, topic: str) -> bool:
    """Whether a topic belongs to the prefix's pool, whatever its size."""
    return prefix_of(topic) == prefix and topic != prefix


class PoolPolicy(enum.StrEnum):
    """How a day's topic is picked from the pool."""

    COST = "cost"  # the resting topic that needs the fewest operations (choose_topic)
    ORDINAL = "ordinal"  # the date's ordinal modulo the pool size, whatever it costs


ORDINAL_MARGIN = 0.02
"""A resting ordinal topic within this share of the cheapest topic's cost is taken instead.

Near-ties go to the topic the ordinal rule would use, so a weekly rhythm stays aligned when
the costs cannot tell the topics apart (bench/pool_choice.py measures the effect)."""


@dataclass(frozen=True)
class Candidate:
    """One pool topic as the day's plan sees it."""

    topic: str
    operations: int  # subscribes + unsubscribes that would make its members today's audience
    used: bool  # has ever had members (a never-used topic is filled before any is reused)
    last_published: dt.datetime | None  # when a message last went to it (None: never)


class NoRestingTopic(BadInput):
    """Every topic of the pool had a message within the rest period: none may change yet."""


class Why(enum.StrEnum):
    """Why a day got its topic (shown by a dry run and logged by a live one)."""

    RECORDED = "recorded"  # the date already planned on it: a rerun never picks again
    ORDINAL = "ordinal"  # the ordinal policy: the date's ordinal modulo the pool size
    NEVER_USED = "never used"  # the cost policy fills never-used topics first
    CHEAPEST = "cheapest"  # the resting topic needing the fewest operations
    NEAR_TIE = "near tie"  # the ordinal topic, within ORDINAL_MARGIN of the cheapest


def is_resting(candidate: Candidate, now: dt.datetime, rest: dt.timedelta) -> bool:
    """No message went to the topic within the rest period: it may change."""
    return candidate.last_published is None or now - candidate.last_published >= rest


def choose_topic(
    candidates: Sequence[Candidate],
    *,
    ordinal_topic: str,
    now: dt.datetime,
    rest: dt.timedelta,
    margin: float = ORDINAL_MARGIN,
) -> Candidate:
    """The day's topic under the cost policy (see decide_topic)."""
    return decide_topic(candidates, ordinal_topic=ordinal_topic, now=now, rest=rest, margin=margin)[
        0
    ]


def decide_topic(
    candidates: Sequence[Candidate],
    *,
    ordinal_topic: str,
    now: dt.datetime,
    rest: dt.timedelta,
    margin: float = ORDINAL_MARGIN,
) -> tuple[Candidate, Why]:
    """The day's topic under the cost policy, and why.

    Only resting topics (no message within `rest`) may change: FCM fans a topic message
    out over time, and a member added or removed meanwhile changes who receives it. Never
    used topics are filled first (the ordinal one if it is among them), as the ordinal rule
    fills them: a weekly rhythm then finds last week's same-day audience in the pool, where
    reusing yesterday's topic from day one would never let it form. Once every topic has
    been used, the cheapest resting topic wins, near-ties going to the ordinal topic.
    """
    resting = [c for c in candidates if is_resting(c, now, rest)]
    if not resting:
        earliest = min(c.last_published for c in candidates if c.last_published is not None)
        raise NoRestingTopic(
            "every topic of the pool had a message within the rest period "
            f"({format_duration(rest.total_seconds())}), and a topic is not changed while "
            f"FCM may still be fanning its message out; the first may change again at "
            f"{(earliest + rest).isoformat()}. Run this date then, or see --rest-period and "
            "--pool-size"
        )
    ordinal = next((c for c in resting if c.topic == ordinal_topic), None)
    unused = [c for c in resting if not c.used]
    if unused:
        first = ordinal if ordinal is not None and not ordinal.used else unused[0]
        return first, Why.NEVER_USED
    cheapest = min(resting, key=lambda c: c.operations)
    if ordinal is not None and ordinal.operations <= cheapest.operations * (1 + margin):
        tie = ordinal.operations > cheapest.operations
        return ordinal, Why.NEAR_TIE if tie else Why.CHEAPEST
    return cheapest, Why.CHEAPEST
