"""Which campaign a command is for, and refusing a configuration that disagrees with it.

"One publish per date" is true of a campaign, not of the name of its topics: the run lock
and the day's publish record are keyed on the campaign's record (store.campaigns). A
command finds its campaign by name: the configuration file's `[campaigns.NAME]`; without
a file, the campaign named after the topic prefix, else the campaign whose prefix it is
now (a prefix changed with `campaign update`). A campaign's first live run registers it.

Its prefix and pool size change only through `topic-sync campaign update`, which records
the change. A command whose configured prefix or pool size disagrees with the record is
refused (exit 2): two cron hosts mid-rollout, one with the old configuration and one with
the new, can never both run the campaign, so no date is published twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from topic_sync import store
from topic_sync.errors import CampaignMismatch
from topic_sync.pool import topic_for

__all__ = ["CampaignSpec", "find", "pool_size_of", "settle"]


@dataclass(frozen=True)
class CampaignSpec:
    """What a command's configuration says of its campaign."""

    prefix: str
    pool_size: int  # the configured one, or the default when not configured
    name: str | None = None  # the configuration file's campaign; None: named after the prefix
    pool_size_given: bool = True  # False: not configured: the recorded one is used
    timezone: str | None = None  # the configuration file's, if any

    @property
    def campaign_name(self) -> str:
        return self.name if self.name is not None else self.prefix


def find(
    conn: Connection, spec: CampaignSpec, *, lock: bool = False
) -> store.CampaignRecord | None:
    """The campaign's record, or None if it was never registered."""
    record = store.campaign_by_name(conn, spec.campaign_name, lock=lock)
    if record is None and spec.name is None:
        record = store.campaign_by_prefix(conn, spec.prefix, lock=lock)
    return record


def _fix(record: store.CampaignRecord, option: str, value: object) -> str:
    return f"topic-sync campaign update {record.name} {option} {value} --live"


def pool_size_of(
    conn: Connection, spec: CampaignSpec, record: store.CampaignRecord | None
) -> tuple[int, list[str]]:
    """The pool size the command must use, and warnings; CampaignMismatch when the
    configuration disagrees with the record."""
    if record is None:
        return spec.pool_size, []
    if record.prefix != spec.prefix:
        raise CampaignMismatch(
            f"campaign {record.name!r} is recorded with topic prefix {record.prefix!r} (last "
            f"changed {record.updated_at:%Y-%m-%d %H:%M %Z}), but this configuration says "
            f"{spec.prefix!r}. Two configurations of one campaign could publish a date twice, "
            "so nothing was done. If this configuration is out of date, update it; if the "
            "prefix really changes, record that once: "
            f"{_fix(record, '--topic-prefix', spec.prefix)}"
        )
    warnings = []
    if spec.timezone is not None and spec.timezone != record.timezone:
        warnings.append(
            f"campaign {record.name!r} is recorded in time zone {record.timezone}, the "
            f"configuration says {spec.timezone}: record it with "
            f"{_fix(record, '--timezone', spec.timezone)}"
        )
    if record.pool_size is not None:
        if spec.pool_size_given and spec.pool_size != record.pool_size:
            raise CampaignMismatch(
                f"campaign {record.name!r} is recorded with a pool of {record.pool_size} "
                f"topics, but this configuration says {spec.pool_size}: the day's topic would "
                "differ between hosts, so nothing was done. If this configuration is out of "
                "date, update it; if the pool really changes, record that once: "
                f"{_fix(record, '--pool-size', spec.pool_size)}"
            )
        return record.pool_size, warnings
    _check_history(conn, record, spec.pool_size)
    return spec.pool_size, warnings


def _check_history(conn: Connection, record: store.CampaignRecord, pool_size: int) -> None:
    """A pool size not recorded yet must agree with every topic the campaign's runs used."""
    for day, prefix, topic in store.campaign_topics_used(conn, record.id):
        if prefix == record.prefix and topic_for(prefix, pool_size, day) != topic:
            raise CampaignMismatch(
                f"campaign {record.name!r} has no recorded pool size yet (it was made from "
                f"earlier runs when the database was upgraded), and a pool of {pool_size} "
                f"does not agree with them: its run of {day} used {topic}, a pool of "
                f"{pool_size} gives {topic_for(prefix, pool_size, day)}. Configure the pool "
                "size it ran with (--pool-size), or record the pool size: "
                f"{_fix(record, '--pool-size', 'N')}"
            )


def settle(
    conn: Connection, spec: CampaignSpec, *, pool_size: int, by: str
) -> store.CampaignRecord:
    """In a live command's transaction: the campaign's record, registered if new, its pool
    size recorded if it was not known; refused if it disagrees with the configuration or
    changed since `pool_size` was chosen (a `campaign update` meanwhile)."""
    record = find(conn, spec, lock=True)
    if record is None:
        taken = store.campaign_by_prefix(conn, spec.prefix)
        if taken is not None:
            raise CampaignMismatch(
                f"topic prefix {spec.prefix!r} belongs to campaign {taken.name!r}, but this "
                f"configuration calls its campaign {spec.campaign_name!r}. If they are the "
                "same campaign, use its recorded name, or rename the record once: "
                f"{_fix(taken, '--name', spec.campaign_name)}"
            )
        record = store.register_campaign(
            conn,
            name=spec.campaign_name,
            prefix=spec.prefix,
            pool_size=pool_size,
            timezone=spec.timezone or "UTC",
            by=by,
        )
        if record is None:  # registered concurrently: read what won
            record = find(conn, spec, lock=True)
            assert record is not None
    used, _ = pool_size_of(conn, spec, record)
    if used != pool_size:
        raise CampaignMismatch(
            f"campaign {record.name!r} changed while this command started (pool of "
            f"{record.pool_size}, not {pool_size}); nothing was done: run it again"
        )
    if record.pool_size is None:
        record = store.update_campaign(conn, record, {"pool_size": pool_size}, by)
    return record
