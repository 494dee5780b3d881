"""The rotating topic pool: which FCM topic a given day uses, and which pool a topic is of.

A token may be in at most 2000 topics and topics cannot be thrown away, so a fixed pool is
reused. Topic names are PREFIX-<slot>; the slot depends only on the date, so every rerun of
a day lands on the same topic. This module is the one place that knows the rule, both ways.
"""

from __future__ import annotations

import datetime as dt
import re

from topic_sync.errors import BadInput
from topic_sync.fcm.wire import MAX_TOPICS_PER_TOKEN, TOPIC_NAME_PATTERN

__all__ = [
    "MAX_TOPICS_PER_TOKEN",
    "TOPIC_NAME_RE",
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
