"""The SQL of the campaigns' previous audiences: what the audience guard compares a day's
audience with, and keeping the day's audience for the next run.

A day's audience is the plan's temporary table `audience_ids` (store.plan_topic): one row
per distinct token of the audience, dead and forgotten ones included (the guard judges what
the producer sent). It is stored as one sorted bigint[] per campaign and date, and compared
by a join in PostgreSQL: a million-token audience never passes through Python.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

__all__ = ["AudienceChange", "audience_change", "save_audience"]

KEPT_DATES = 2
"""Dates kept per campaign: the latest (a rerun of it replaces it) and the one before (what
a rerun of the latest is compared with)."""


@dataclass(frozen=True)
class AudienceChange:
    """A day's audience next to the campaign's previous one (distinct tokens)."""

    previous_day: dt.date
    previous: int  # tokens of the previous audience
    size: int  # tokens of the day's audience
    kept: int  # tokens in both

    @property
    def left(self) -> int:
        return self.previous - self.kept

    @property
    def new(self) -> int:
        return self.size - self.kept

    @property
    def left_share(self) -> float:
        return self.left / self.previous if self.previous else 0.0

    @property
    def new_share(self) -> float:
        return self.new / self.size if self.size else 0.0

    @property
    def size_change(self) -> float:
        """(size - previous) / previous: -0.25 is a quarter smaller."""
        return (self.size - self.previous) / self.previous if self.previous else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "previous_date": self.previous_day.isoformat(),
            "previous": self.previous,
            "size": self.size,
            "kept": self.kept,
            "left": self.left,
            "new": self.new,
            "left_share": round(self.left_share, 4),
            "new_share": round(self.new_share, 4),
            "size_change": round(self.size_change, 4),
        }


def audience_change(conn: Connection, campaign_id: int, day: dt.date) -> AudienceChange | None:
    """Compare the plan's audience with the campaign's latest audience of an earlier date;
    None if it has none (its first run)."""
    row = conn.execute(
        text(
            """
            WITH previous AS (
                SELECT run_date, size, token_ids FROM audiences
                WHERE campaign_id = :campaign_id AND run_date < :day
                ORDER BY run_date DESC LIMIT 1
            )
            SELECT p.run_date, p.size, (SELECT count(*) FROM audience_ids),
                   (SELECT count(*) FROM unnest(p.token_ids) AS o(id)
                    JOIN audience_ids a ON a.id = o.id)
            FROM previous p
            """
        ),
        {"campaign_id": campaign_id, "day": day},
    ).one_or_none()
    if row is None:
        return None
    return AudienceChange(row[0], int(row[1]), int(row[2]), int(row[3]))


def save_audience(conn: Connection, campaign_id: int, day: dt.date, run_id: int | None) -> None:
    """Keep the plan's audience as the campaign's audience of `day` (replacing a rerun's),
    and only the latest KEPT_DATES dates of the campaign."""
    params = {"campaign_id": campaign_id, "day": day, "run_id": run_id, "keep": KEPT_DATES}
    conn.execute(
        text(
            """
            INSERT INTO audiences (campaign_id, run_date, run_id, size, token_ids)
            SELECT :campaign_id, :day, :run_id, count(*),
                   coalesce(array_agg(id ORDER BY id), '{}')
            FROM audience_ids
            ON CONFLICT (campaign_id, run_date) DO UPDATE
            SET run_id = excluded.run_id, size = excluded.size,
                token_ids = excluded.token_ids, saved_at = now()
            """
        ),
        params,
    )
    conn.execute(
        text(
            """
            DELETE FROM audiences
            WHERE campaign_id = :campaign_id AND run_date NOT IN (
                SELECT run_date FROM audiences WHERE campaign_id = :campaign_id
                ORDER BY run_date DESC LIMIT :keep)
            """
        ),
        params,
    )
