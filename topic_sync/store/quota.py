"""The SQL of the learned quota: what a command found out about FCM's quota, per target and
API, for the next command to start from (the table `fcm_quota`)."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from sqlalchemy import Connection, text

from topic_sync.states import FcmApi

__all__ = ["LearnedQuota", "learned_quota", "remember_quota"]


class LearnedQuota(NamedTuple):
    rate: float  # requests per second
    measured: bool  # FCM refused above it (else that much merely got through)
    waits: bool  # its 429s said how long to wait (Retry-After, RetryInfo)
    learned_at: dt.datetime


def learned_quota(
    conn: Connection, project_id: str, endpoint: str, api: FcmApi
) -> LearnedQuota | None:
    row = conn.execute(
        text(
            "SELECT rate, measured, waits, learned_at FROM fcm_quota "
            "WHERE project_id = :project AND endpoint = :endpoint AND api = :api"
        ),
        {"project": project_id, "endpoint": endpoint, "api": api.value},
    ).one_or_none()
    return LearnedQuota(float(row[0]), bool(row[1]), bool(row[2]), row[3]) if row else None


def remember_quota(
    conn: Connection,
    project_id: str,
    endpoint: str,
    api: FcmApi,
    rate: float,
    measured: bool,
    *,
    waits: bool = False,
) -> None:
    """Keep what a command learned (the latest wins: the quota may have changed)."""
    conn.execute(
        text(
            """
            INSERT INTO fcm_quota (project_id, endpoint, api, rate, measured, waits)
            VALUES (:project, :endpoint, :api, :rate, :measured, :waits)
            ON CONFLICT (project_id, endpoint, api) DO UPDATE
            SET rate = excluded.rate, measured = excluded.measured, waits = excluded.waits,
                learned_at = now()
            """
        ),
        {
            "project": project_id,
            "endpoint": endpoint,
            "api": api.value,
            "rate": rate,
            "measured": measured,
            "waits": waits,
        },
    )
