"""The rotating topic pool: which FCM topic a given day uses.

A token may be in at most 2000 topics and topics cannot be thrown away, so a
fixed pool is reused. The slot depends only on the date, so every rerun of a
day lands on the same topic.
"""

from __future__ import annotations

import datetime as dt
import re

from topic_sync.errors import BadInput

MAX_TOPICS_PER_TOKEN = 2000
TOPIC_NAME_RE = re.compile(r"[a-zA-Z0-9\-_.~%]{1,900}")


def validate_pool(prefix: str, pool_size: int) -> None:
    """Refuse a prefix or pool size FCM would reject, before anything runs."""
    if not isinstance(pool_size, int) or pool_size < 1:
        raise BadInput(f"pool size must be a whole number of at least 1, not {pool_size!r}")
    if pool_size > MAX_TOPICS_PER_TOKEN:
        raise BadInput(
            f"pool size {pool_size} is over FCM's limit of {MAX_TOPICS_PER_TOKEN} topics per token"
        )
    if not prefix:
        raise BadInput("topic prefix must not be empty")
    if prefix.startswith("/topics/"):
        raise BadInput(f"topic prefix {prefix!r}: give the bare name, without '/topics/'")
    longest = f"{prefix}-{pool_size - 1}"
    if not TOPIC_NAME_RE.fullmatch(longest):
        raise BadInput(
            f"topic prefix {prefix!r} breaks FCM's topic-name rule "
            "(1 to 900 characters of A-Z a-z 0-9 - _ . ~ %)"
        )


def slot_for(day: dt.date, pool_size: int) -> int:
    return day.toordinal() % pool_size


def topic_for(prefix: str, pool_size: int, day: dt.date) -> str:
    validate_pool(prefix, pool_size)
    return f"{prefix}-{slot_for(day, pool_size)}"


def pool_topics(prefix: str, pool_size: int) -> list[str]:
    validate_pool(prefix, pool_size)
    return [f"{prefix}-{slot}" for slot in range(pool_size)]
