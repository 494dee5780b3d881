"""How long today's sync will likely take, and so when it must start to be done by publish_at.

A day's sync is paced by FCM's topic quota: its duration is its operations (one subscribe
or removal per token) over the rate the pacer can hold. Today's operations are unknown
until the audience is loaded and diffed, so the estimate takes the largest day of the
campaign's last ESTIMATE_DAYS (a conservative guess: churn varies from day to day), over the
quota this database learned against its FCM target (store.quota; what a command measured
or saw get through), never above --rate-limit. Loading and planning the audience (about
half a minute at a million tokens, bench/RESULTS.md) is left to the margin.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection

from topic_sync import store
from topic_sync.dates import format_duration
from topic_sync.states import FcmApi

ESTIMATE_DAYS = 7  # the campaign's recent days an estimate looks at


@dataclass(frozen=True)
class SyncEstimate:
    operations: int  # the largest recent day's subscribes plus removals
    days: int  # how many recent days that is the largest of
    rate: float  # requests per second the sync is expected to hold
    learned: bool  # the rate is the quota learned against this target (else --rate-limit)

    @property
    def seconds(self) -> float:
        return self.operations / self.rate

    def describe(self) -> str:
        source = "the quota learned against this FCM target" if self.learned else "--rate-limit"
        return (
            f"about {format_duration(self.seconds)}: the largest of the last {self.days} days "
            f"was {self.operations:,} operations, at {self.rate:,.0f}/s ({source})"
        )


def estimate(
    conn: Connection, campaign_id: int, day: dt.date, *, rate_limit: float, api: FcmApi
) -> SyncEstimate | None:
    """The day's likely sync from the campaign's recent days (None: no earlier day)."""
    recent = store.recent_operations(conn, campaign_id, day, ESTIMATE_DAYS)
    if not recent:
        return None
    rate, learned = rate_limit, False
    target = store.bound_target(conn)
    if target is not None:
        quota = store.learned_quota(conn, target[0], target[1], api)
        if quota is not None and quota.rate < rate_limit:
            rate, learned = quota.rate, True
    return SyncEstimate(max(recent), len(recent), rate, learned)


def sync_start(publish_at: dt.datetime, seconds: float, margin: float) -> dt.datetime:
    """When a sync of `seconds` must start to end `margin` seconds before publish_at."""
    return publish_at - dt.timedelta(seconds=seconds + margin)


def late_warning(
    found: SyncEstimate | None, now: dt.datetime, publish_at: dt.datetime
) -> str | None:
    """A warning when a sync started now will likely not be done by publish_at."""
    if found is None:
        return None
    ends = now + dt.timedelta(seconds=found.seconds)
    if ends <= publish_at:
        return None
    return (
        f"today's sync will likely not finish by publish_at "
        f"({publish_at.isoformat(timespec='minutes')}): started now it ends around "
        f"{ends.isoformat(timespec='minutes')}, {found.describe()}. Start it earlier "
        "(the scheduler starts it at publish_at - estimate - sync_margin)"
    )
