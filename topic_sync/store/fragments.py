"""SQL fragments the store's statements and the schema share, each fact written once.

The states themselves are enums (topic_sync.states); what a set of them means in SQL
("pending", "a member of the topic"), and which run of a campaign is its latest, is said
here and nowhere else, so the statements, the indexes and the CHECK constraints agree.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from topic_sync.states import SubscriptionStatus


def sql_list(values: Iterable[enum.StrEnum]) -> str:
    """Enum values as a SQL list: ('a', 'b'). Give an enum class for all of its values."""
    return "(" + ", ".join(f"'{v.value}'" for v in values) + ")"


PENDING_SQL = sql_list(status for status in SubscriptionStatus if status.pending)
"""The pending statuses as a SQL list: the work queue's partial index is `status IN` this, a
predicate PostgreSQL can prove from `status = 'pending_subscribe'`, so every query on the
queue can use the index."""

MEMBER_SQL = sql_list((SubscriptionStatus.SUBSCRIBED, SubscriptionStatus.PENDING_SUBSCRIBE))
"""A topic's members as a SQL list: subscribed, or owed a subscription (FCM may already hold
it). These are the rows a removal is owed for when a token leaves the audience or is
forgotten, and what `forget --undo` restores."""


def latest_run_first(table: str = "") -> str:
    """The ORDER BY terms of runs, the latest first: the newest date, then the newest start,
    then the newest row. `table` is the runs table's alias in the statement, if any."""
    of = f"{table}." if table else ""
    return f"{of}run_date DESC, {of}started_at DESC, {of}id DESC"
