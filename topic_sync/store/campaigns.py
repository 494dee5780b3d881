"""The SQL of campaigns: a campaign's identity (name, prefix, pool size, time zone), the record
of every change to it, and the topics its runs used.

Every statement takes an open SQLAlchemy Connection; the caller decides the transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from topic_sync.states import CampaignChange
from topic_sync.store.fragments import latest_run_first

__all__ = [
    "CampaignRecord",
    "CampaignChangeRow",
    "campaign_by_id",
    "campaign_by_name",
    "campaign_by_prefix",
    "campaign_changes",
    "campaign_topics_used",
    "campaigns_called",
    "campaigns_of_topics",
    "list_campaigns",
    "register_campaign",
    "update_campaign",
]


@dataclass(frozen=True)
class CampaignRecord:
    id: int
    name: str
    prefix: str
    pool_size: int | None  # None: not known yet (made from earlier runs by the upgrade)
    timezone: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: Any) -> CampaignRecord:
        return cls(*row)

    def identity(self) -> dict[str, object]:
        """What campaign_changes records of it."""
        return {
            "name": self.name,
            "prefix": self.prefix,
            "pool_size": self.pool_size,
            "timezone": self.timezone,
        }


@dataclass(frozen=True)
class CampaignChangeRow:
    kind: CampaignChange
    before: dict[str, object] | None
    after: dict[str, object]
    changed_by: str
    changed_at: dt.datetime


_COLUMNS = "id, name, prefix, pool_size, timezone, created_at, updated_at"


def _one(conn: Connection, where: str, params: dict[str, object], lock: bool) -> Any:
    sql = f"SELECT {_COLUMNS} FROM campaigns WHERE {where}" + (" FOR UPDATE" if lock else "")
    row = conn.execute(text(sql), params).one_or_none()
    return CampaignRecord.of(row) if row else None


def campaign_by_name(conn: Connection, name: str, *, lock: bool = False) -> CampaignRecord | None:
    return _one(conn, "name = :v", {"v": name}, lock)  # type: ignore[no-any-return]


def campaign_by_prefix(
    conn: Connection, prefix: str, *, lock: bool = False
) -> CampaignRecord | None:
    return _one(conn, "prefix = :v", {"v": prefix}, lock)  # type: ignore[no-any-return]


def campaign_by_id(conn: Connection, campaign_id: int, *, lock: bool = False) -> CampaignRecord:
    found = _one(conn, "id = :v", {"v": campaign_id}, lock)
    assert found is not None, f"no campaign {campaign_id}"
    return found  # type: ignore[no-any-return]


def list_campaigns(conn: Connection) -> list[CampaignRecord]:
    rows = conn.execute(text(f"SELECT {_COLUMNS} FROM campaigns ORDER BY name")).all()
    return [CampaignRecord.of(row) for row in rows]


def _record_change(
    conn: Connection,
    campaign_id: int,
    kind: CampaignChange,
    before: dict[str, object] | None,
    after: dict[str, object],
    by: str,
) -> None:
    conn.execute(
        text(
            "INSERT INTO campaign_changes (campaign_id, kind, before, after, changed_by) "
            "VALUES (:id, :kind, CAST(:before AS jsonb), CAST(:after AS jsonb), :by)"
        ),
        {
            "id": campaign_id,
            "kind": kind,
            "before": None if before is None else json.dumps(before),
            "after": json.dumps(after),
            "by": by,
        },
    )


def register_campaign(
    conn: Connection, *, name: str, prefix: str, pool_size: int, timezone: str, by: str
) -> CampaignRecord | None:
    """Record a new campaign, and that it was registered. None when its name or prefix is
    taken (by a concurrent registration, or by another campaign): the caller reads again."""
    row = conn.execute(
        text(
            f"""
            INSERT INTO campaigns (name, prefix, pool_size, timezone)
            VALUES (:name, :prefix, :pool, :tz)
            ON CONFLICT DO NOTHING
            RETURNING {_COLUMNS}
            """
        ),
        {"name": name, "prefix": prefix, "pool": pool_size, "tz": timezone},
    ).one_or_none()
    if row is None:
        return None
    record = CampaignRecord.of(row)
    _record_change(conn, record.id, CampaignChange.REGISTERED, None, record.identity(), by)
    return record


def update_campaign(
    conn: Connection, before: CampaignRecord, changes: dict[str, object], by: str
) -> CampaignRecord:
    """Change a campaign's identity (name, prefix, pool_size, timezone) and record it."""
    allowed = {"name", "prefix", "pool_size", "timezone"}
    assert changes and set(changes) <= allowed, changes
    assignments = ", ".join(f"{column} = :{column}" for column in sorted(changes))
    row = conn.execute(
        text(
            f"UPDATE campaigns SET {assignments}, updated_at = now() WHERE id = :id "
            f"RETURNING {_COLUMNS}"
        ),
        {**changes, "id": before.id},
    ).one()
    after = CampaignRecord.of(row)
    _record_change(conn, after.id, CampaignChange.CHANGED, before.identity(), after.identity(), by)
    return after


def campaign_changes(conn: Connection, campaign_id: int) -> list[CampaignChangeRow]:
    rows = conn.execute(
        text(
            "SELECT kind, before, after, changed_by, changed_at FROM campaign_changes "
            "WHERE campaign_id = :id ORDER BY changed_at, id"
        ),
        {"id": campaign_id},
    ).all()
    return [CampaignChangeRow(CampaignChange(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def campaign_topics_used(conn: Connection, campaign_id: int) -> list[tuple[dt.date, str, str]]:
    """(date, prefix, topic) of every run of the campaign: what its pool size must agree with."""
    rows = conn.execute(
        text("SELECT run_date, prefix, topic FROM runs WHERE campaign_id = :id ORDER BY run_date"),
        {"id": campaign_id},
    ).all()
    return [(r[0], str(r[1]), str(r[2])) for r in rows]


def campaigns_of_topics(
    conn: Connection, prefix_of: dict[str, str]
) -> dict[str, CampaignRecord | None]:
    """The campaign each topic belongs to (`prefix_of`: topic -> the prefix its name
    carries): the campaign with that prefix now, else the one whose latest run used the
    topic (a prefix since changed), else None."""
    rows = conn.execute(
        text(
            f"""
            SELECT t.topic, coalesce(c.id, (
                SELECT r.campaign_id FROM runs r WHERE r.topic = t.topic
                ORDER BY {latest_run_first("r")} LIMIT 1))
            FROM unnest(CAST(:topics AS text[]), CAST(:prefixes AS text[])) AS t(topic, prefix)
            LEFT JOIN campaigns c ON c.prefix = t.prefix
            """
        ),
        {"topics": list(prefix_of), "prefixes": list(prefix_of.values())},
    ).all()
    ids = {str(r[0]): r[1] for r in rows}
    found = conn.execute(
        text(f"SELECT {_COLUMNS} FROM campaigns WHERE id = ANY(:ids)"),
        {"ids": [i for i in ids.values() if i is not None]},
    ).all()
    records = {record.id: record for record in map(CampaignRecord.of, found)}
    return {topic: (records[i] if i is not None else None) for topic, i in ids.items()}


def campaigns_called(conn: Connection, value: str) -> list[int]:
    """The campaigns that are or were called `value`: by name, by prefix, or by a prefix
    their runs used (a prefix since changed)."""
    return list(
        conn.scalars(
            text(
                "SELECT id FROM campaigns WHERE name = :v OR prefix = :v "
                "UNION SELECT campaign_id FROM runs WHERE prefix = :v ORDER BY 1"
            ),
            {"v": value},
        )
    )
