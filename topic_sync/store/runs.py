"""The SQL of runs: the day's record, its counts and publish state, topic fences, the FCM
target the state is bound to, and the reads behind `report` and `status`.

Every statement takes an open SQLAlchemy Connection; the caller decides the transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from topic_sync.states import PublishState, RunStatus
from topic_sync.store.fragments import PENDING_SQL, latest_run_first
from topic_sync.store.subscriptions import Plan

__all__ = [
    "run_status",
    "failure_rows",
    "failure_groups",
    "dead_token_rows",
    "purge_failures",
    "purgeable_failures",
    "latest_run_rows",
    "run_summary_rows",
    "topics_of_failures_without_run",
    "Fence",
    "RunRecord",
    "RunCounts",
    "ATTEMPT_COLUMNS",
    "add_progress",
    "attempt_rows",
    "confirm_recorded_publish",
    "bind_target",
    "bound_target",
    "claim_publish",
    "confirm_publish",
    "finish_run",
    "get_run",
    "mark_synced",
    "resume_waiting",
    "run_counts",
    "waiting_run",
    "publish_in_flight",
    "record_no_audience",
    "recent_operations",
    "recorded_topic",
    "read_fence",
    "refresh_publish_intent",
    "release_publish",
    "reset_target_state",
    "save_plan",
    "settle_failures",
    "start_run",
    "take_fence",
    "target_state_counts",
]


@dataclass(frozen=True)
class RunRecord:
    id: int
    campaign_id: int
    prefix: str
    run_date: dt.date
    topic: str
    status: RunStatus
    publish_state: PublishState
    message_id: str | None
    attempt: int = 1  # the day's current attempt (earlier ones are in run_attempts)
    synced_at: dt.datetime | None = None  # the current attempt's sync completed then
    publish_at: dt.datetime | None = None  # the day's window (None: publish once synced)
    publish_by: dt.datetime | None = None

    @classmethod
    def of(cls, row: Any) -> RunRecord:
        return cls(
            int(row[0]),
            int(row[1]),
            str(row[2]),
            row[3],
            str(row[4]),
            RunStatus(row[5]),
            PublishState(row[6]),
            row[7],
            int(row[8]),
            row[9],
            row[10],
            row[11],
        )


# --- runs -------------------------------------------------------------------------------------

_RUN_COLUMNS = (
    "id, campaign_id, prefix, run_date, topic, status, publish_state, message_id, attempt, "
    "synced_at, publish_at, publish_by"
)

ATTEMPT_COLUMNS = (
    "attempt",
    "topic",
    "transport",
    "status",
    "audience_path",
    "audience_lines",
    "audience_size",
    "duplicates",
    "skipped_invalid",
    "suppressed",
    "newly_dead",
    "to_add",
    "to_remove",
    "added",
    "removed",
    "failed",
    "outcomes",
    "attempts",
    "retries",
    "wait_seconds",
    "note",
    "started_at",
    "finished_at",
)
"""What one attempt at a day's run is: the columns `run_attempts` keeps of `runs` (those of
models.RunAttempt but its keys, written out: a run does not import the ORM to read them;
tests/integration/test_db.py holds the two equal)."""

# The day's current attempt kept, before a rerun (or a later "no audience") starts anew.
_ARCHIVE_SQL = f"""
    INSERT INTO run_attempts (run_id, {", ".join(ATTEMPT_COLUMNS)})
    SELECT id, {", ".join(ATTEMPT_COLUMNS)} FROM runs
    WHERE campaign_id = :campaign AND run_date = :day {{extra}}
    FOR UPDATE
    ON CONFLICT (run_id, attempt) DO NOTHING
"""
# A new attempt's figures start from nothing.
_NEW_ATTEMPT = """
    attempt = runs.attempt + 1, started_at = now(), audience_lines = 0, audience_size = 0,
    duplicates = 0, skipped_invalid = 0, suppressed = 0, newly_dead = 0, to_add = 0,
    to_remove = 0, added = 0, removed = 0, failed = '{}', outcomes = '{}', attempts = 0,
    retries = 0, wait_seconds = 0, synced_at = NULL, publish_at = NULL, publish_by = NULL
"""


def get_run(conn: Connection, campaign_id: int, day: dt.date) -> RunRecord | None:
    row = conn.execute(
        text(f"SELECT {_RUN_COLUMNS} FROM runs WHERE campaign_id = :c AND run_date = :day"),
        {"c": campaign_id, "day": day},
    ).one_or_none()
    return RunRecord.of(row) if row else None


def start_run(
    conn: Connection,
    *,
    campaign_id: int,
    prefix: str,
    day: dt.date,
    topic: str,
    transport: str,
    audience_path: str,
) -> RunRecord:
    """Create the day's run row, or start its next attempt for a rerun: the current attempt
    is kept in run_attempts first, and the publish state is kept."""
    conn.execute(text(_ARCHIVE_SQL.format(extra="")), {"campaign": campaign_id, "day": day})
    row = conn.execute(
        text(
            f"""
            INSERT INTO runs (campaign_id, prefix, run_date, topic, transport, audience_path,
                              status)
            VALUES (:campaign, :prefix, :day, :topic, :transport, :path, '{RunStatus.SYNCING}')
            ON CONFLICT (campaign_id, run_date) DO UPDATE
            SET prefix = excluded.prefix, topic = excluded.topic,
                transport = excluded.transport, audience_path = excluded.audience_path,
                status = '{RunStatus.SYNCING}', finished_at = NULL, note = NULL, {_NEW_ATTEMPT}
            RETURNING {_RUN_COLUMNS}
            """
        ),
        {
            "campaign": campaign_id,
            "prefix": prefix,
            "day": day,
            "topic": topic,
            "transport": transport,
            "path": audience_path,
        },
    ).one()
    return RunRecord.of(row)


def recorded_topic(conn: Connection, campaign_id: int, day: dt.date) -> str | None:
    """The topic the campaign's date was planned on, if it was: every rerun of the date
    lands on it and never picks again. A day whose audience never came planned nothing,
    unless an earlier attempt of it did (its topic then stays the row's)."""
    topic: str | None = conn.scalar(
        text(
            f"""
            SELECT r.topic FROM runs r
            WHERE r.campaign_id = :c AND r.run_date = :day AND r.topic <> ''
              AND (r.status <> '{RunStatus.NO_AUDIENCE}' OR EXISTS (
                  SELECT 1 FROM run_attempts a
                  WHERE a.run_id = r.id AND a.topic = r.topic
                    AND a.status <> '{RunStatus.NO_AUDIENCE}'))
            """
        ),
        {"c": campaign_id, "day": day},
    )
    return topic


def record_no_audience(
    conn: Connection,
    *,
    campaign_id: int,
    prefix: str,
    day: dt.date,
    topic: str,
    transport: str,
    audience_path: str,
    note: str,
    status: RunStatus = RunStatus.NO_AUDIENCE,
) -> bool:
    """Record that the day's audience never came (or, `status` missed, that it started
    past its publish_by: nothing synced, nothing sent). A row of the day that says more (a run
    that planned, synced or published) is left as it is; returns whether it was written.
    An earlier attempt it replaces (an audience that never came, a failure) is kept, and
    the topic a failed attempt planned stays the day's (recorded_topic). `topic` is what
    the row shows otherwise: the ordinal rule's, or '' while no topic is chosen."""
    replaceable = (
        f"AND publish_state = '{PublishState.NONE}' "
        f"AND status IN ('{RunStatus.NO_AUDIENCE}', '{RunStatus.FAILED}')"
    )
    params = {"campaign": campaign_id, "day": day}
    conn.execute(text(_ARCHIVE_SQL.format(extra=replaceable)), params)
    row = conn.execute(
        text(
            f"""
            INSERT INTO runs (campaign_id, prefix, run_date, topic, transport, audience_path,
                              status, note, finished_at)
            VALUES (:campaign, :prefix, :day, :topic, :transport, :path, :status,
                    :note, now())
            ON CONFLICT (campaign_id, run_date) DO UPDATE
            SET prefix = excluded.prefix,
                topic = CASE WHEN runs.status = '{RunStatus.NO_AUDIENCE}' THEN excluded.topic
                             ELSE runs.topic END,
                transport = excluded.transport, audience_path = excluded.audience_path,
                status = excluded.status, note = excluded.note, finished_at = now(),
                {_NEW_ATTEMPT}
            WHERE runs.publish_state = '{PublishState.NONE}'
              AND runs.status IN ('{RunStatus.NO_AUDIENCE}', '{RunStatus.FAILED}')
            RETURNING id
            """
        ),
        {
            **params,
            "prefix": prefix,
            "topic": topic,
            "transport": transport,
            "path": audience_path,
            "note": note,
            "status": status.value,
        },
    ).one_or_none()
    return row is not None


def save_plan(conn: Connection, run_id: int, plan: Plan) -> None:
    conn.execute(
        text(
            """
            UPDATE runs SET audience_lines = :lines, audience_size = :size,
                duplicates = :dups, skipped_invalid = :skipped, suppressed = :suppressed,
                to_add = :to_add, to_remove = :to_remove, newly_dead = 0,
                added = 0, removed = 0, failed = '{}', outcomes = '{}', attempts = 0,
                retries = 0, wait_seconds = 0
            WHERE id = :id
            """
        ),
        {
            "id": run_id,
            "lines": plan.audience_lines,
            "size": plan.audience_size,
            "dups": plan.duplicates,
            "skipped": plan.skipped,
            "suppressed": plan.suppressed,
            "to_add": plan.to_add,
            "to_remove": plan.to_remove,
        },
    )


def add_progress(
    conn: Connection,
    run_id: int,
    *,
    added: int = 0,
    removed: int = 0,
    attempts: int = 0,
    retries: int = 0,
    wait_seconds: float = 0.0,
    outcomes: dict[str, int] | None = None,
    newly_dead: int = 0,
) -> None:
    """Add a batch's counts to its run, in the batch's own transaction."""
    conn.execute(
        text(
            """
            UPDATE runs SET added = added + :added, removed = removed + :removed,
                newly_dead = newly_dead + :newly_dead,
                attempts = attempts + :attempts, retries = retries + :retries,
                wait_seconds = wait_seconds + :wait,
                outcomes = outcomes || coalesce((
                    SELECT jsonb_object_agg(
                        d.key, coalesce((runs.outcomes ->> d.key)::int, 0) + d.value::int)
                    FROM jsonb_each_text(CAST(:outcomes AS jsonb)) AS d
                ), '{}')
            WHERE id = :id
            """
        ),
        {
            "id": run_id,
            "added": added,
            "removed": removed,
            "attempts": attempts,
            "retries": retries,
            "wait": wait_seconds,
            "outcomes": json.dumps(outcomes or {}),
            "newly_dead": newly_dead,
        },
    )


@dataclass(frozen=True)
class RunCounts:
    """What the current attempt of a run did, as its row keeps it (add_progress)."""

    added: int
    removed: int
    attempts: int  # token attempts, every try counted
    retries: int  # token attempts that were retries
    newly_dead: int
    wait_seconds: float
    outcomes: dict[str, int]  # per attempt: "ok" or error code


def run_counts(conn: Connection, run_id: int) -> RunCounts:
    """The run's counts, from its row: the one record of them (a rerun's attempt starts
    them from nothing, start_run; an earlier attempt's are in run_attempts)."""
    row = conn.execute(
        text(
            "SELECT added, removed, attempts, retries, newly_dead, wait_seconds, outcomes "
            "FROM runs WHERE id = :id"
        ),
        {"id": run_id},
    ).one()
    return RunCounts(
        int(row.added),
        int(row.removed),
        int(row.attempts),
        int(row.retries),
        int(row.newly_dead),
        float(row.wait_seconds),
        {str(code): int(n) for code, n in (row.outcomes or {}).items()},
    )


def settle_failures(conn: Connection, run_id: int) -> dict[str, int]:
    """Store and return the run's still-unresolved failures per error code."""
    failed = conn.scalar(
        text(
            """
            UPDATE runs SET failed = coalesce((
                SELECT jsonb_object_agg(code, n) FROM (
                    SELECT code, count(*) AS n FROM token_failures
                    WHERE run_id = :id AND resolved_at IS NULL GROUP BY code) per_code
            ), '{}')
            WHERE id = :id
            RETURNING failed
            """
        ),
        {"id": run_id},
    )
    return dict(failed or {})


def mark_synced(
    conn: Connection,
    run_id: int,
    *,
    at: dt.datetime,
    publish_at: dt.datetime | None,
    publish_by: dt.datetime | None,
    note: str,
) -> None:
    """The sync is complete (nothing owed to remove): the run waits to publish, and a rerun
    of the day resumes into the wait rather than syncing again (while its fence stands)."""
    conn.execute(
        text(
            f"""
            UPDATE runs SET status = '{RunStatus.WAITING}', synced_at = :at,
                publish_at = :publish_at, publish_by = :publish_by, note = :note
            WHERE id = :id
            """
        ),
        {"id": run_id, "at": at, "publish_at": publish_at, "publish_by": publish_by, "note": note},
    )


def resume_waiting(
    conn: Connection,
    run_id: int,
    *,
    publish_at: dt.datetime | None,
    publish_by: dt.datetime | None,
    note: str,
) -> bool:
    """A rerun takes over a synced, unpublished day's wait (its window as now configured);
    whether the day was still synced and unpublished."""
    row = conn.execute(
        text(
            f"""
            UPDATE runs SET status = '{RunStatus.WAITING}', note = :note, finished_at = NULL,
                publish_at = :publish_at, publish_by = :publish_by
            WHERE id = :id AND synced_at IS NOT NULL AND publish_state = '{PublishState.NONE}'
            RETURNING id
            """
        ),
        {"id": run_id, "publish_at": publish_at, "publish_by": publish_by, "note": note},
    ).one_or_none()
    return row is not None


def waiting_run(conn: Connection, campaign_id: int) -> RunRecord | None:
    """The campaign's latest day that is synced and waiting to publish, if any."""
    row = conn.execute(
        text(
            f"SELECT {_RUN_COLUMNS} FROM runs "
            f"WHERE campaign_id = :c AND status = '{RunStatus.WAITING}' "
            "ORDER BY run_date DESC LIMIT 1"
        ),
        {"c": campaign_id},
    ).one_or_none()
    return RunRecord.of(row) if row else None


def recent_operations(conn: Connection, campaign_id: int, before: dt.date, days: int) -> list[int]:
    """The FCM operations (subscribes plus removals) each of the campaign's days planned in
    the `days` before `before`, the latest first: per day, its largest attempt's plan (the
    first attempt's, as a rule: a rerun plans only what is left)."""
    rows = conn.execute(
        text(
            """
            SELECT greatest(r.to_add + r.to_remove, coalesce(max(a.to_add + a.to_remove), 0))
            FROM runs r LEFT JOIN run_attempts a ON a.run_id = r.id
            WHERE r.campaign_id = :c AND r.run_date < :before AND r.run_date >= :since
            GROUP BY r.id ORDER BY r.run_date DESC
            """
        ),
        {"c": campaign_id, "before": before, "since": before - dt.timedelta(days=days)},
    ).all()
    return [int(row[0]) for row in rows]


def run_status(conn: Connection, run_id: int) -> RunStatus:
    return RunStatus(
        conn.execute(text("SELECT status FROM runs WHERE id = :id"), {"id": run_id}).scalar_one()
    )


def finish_run(conn: Connection, run_id: int, status: RunStatus, note: str | None = None) -> None:
    conn.execute(
        text("UPDATE runs SET status = :status, note = :note, finished_at = now() WHERE id = :id"),
        {"id": run_id, "status": status, "note": note},
    )


def claim_publish(conn: Connection, run_id: int, *, republish: bool) -> dt.datetime | None:
    """Record the intent to publish before sending; only one caller can win it. Returns the
    intent's time stamp (what evidence of this very send is matched on), or None.

    The caller checks the topic's fence in the same transaction, so the intent is only
    ever recorded by the run that still owns the topic.
    """
    allowed = ("none", "intent") if republish else ("none",)
    stamped: dt.datetime | None = conn.execute(
        text(
            f"""
            UPDATE runs
            SET publish_state = '{PublishState.INTENT}', publish_intent_at = clock_timestamp(),
                status = '{RunStatus.PUBLISHING}'
            WHERE id = :id AND publish_state = ANY(:allowed)
            RETURNING publish_intent_at
            """
        ),
        {"id": run_id, "allowed": list(allowed)},
    ).scalar_one_or_none()
    return stamped


def refresh_publish_intent(conn: Connection, run_id: int) -> dt.datetime | None:
    """Stamp the intent before another send attempt: it marks a publish in flight."""
    stamped: dt.datetime | None = conn.execute(
        text(
            "UPDATE runs SET publish_intent_at = clock_timestamp() "
            f"WHERE id = :id AND publish_state = '{PublishState.INTENT}' "
            "RETURNING publish_intent_at"
        ),
        {"id": run_id},
    ).scalar_one_or_none()
    return stamped


def confirm_publish(
    conn: Connection, run_id: int, message_id: str | None, note: str | None = None
) -> None:
    conn.execute(
        text(
            f"""
            UPDATE runs SET publish_state = '{PublishState.SENT}', message_id = :mid,
                published_at = now(), status = '{RunStatus.PUBLISHED}', finished_at = now(),
                note = :note
            WHERE id = :id
            """
        ),
        {"id": run_id, "mid": message_id, "note": note},
    )


def confirm_recorded_publish(
    conn: Connection, run_id: int, intent_at: dt.datetime, message_id: str, note: str
) -> bool:
    """Record a send FCM accepted, from evidence of that very intent (its time stamp); an
    intent since renewed, or a record already confirmed, is left alone. Whether it wrote."""
    row = conn.execute(
        text(
            f"""
            UPDATE runs SET publish_state = '{PublishState.SENT}', message_id = :mid,
                published_at = now(), status = '{RunStatus.PUBLISHED}', finished_at = now(),
                note = :note
            WHERE id = :id AND publish_state = '{PublishState.INTENT}' AND publish_intent_at = :at
            RETURNING id
            """
        ),
        {"id": run_id, "mid": message_id, "at": intent_at, "note": note},
    ).one_or_none()
    return row is not None


def release_publish(conn: Connection, run_id: int, note: str) -> None:
    """FCM said no for sure: nothing went out, so a later run may try again."""
    conn.execute(
        text(
            f"UPDATE runs SET publish_state = '{PublishState.NONE}', "
            f"status = '{RunStatus.FAILED}', note = :note, finished_at = now() "
            f"WHERE id = :id AND publish_state = '{PublishState.INTENT}'"
        ),
        {"id": run_id, "note": note},
    )


# --- fences: who last planned a topic -------------------------------------------------------


@dataclass(frozen=True)
class Fence:
    topic: str
    epoch: int
    owner: str
    run_id: int | None


def take_fence(conn: Connection, topic: str, owner: str, run_id: int | None) -> Fence:
    """Become the topic's planner: a new epoch, which every batch and publish will check.

    The row lock this takes waits for batches in flight on the topic (they hold the fence
    FOR SHARE until they commit), so a plan never interleaves with another's batch.
    """
    row = conn.execute(
        text(
            """
            INSERT INTO topic_fences (topic, epoch, owner, run_id) VALUES (:topic, 1, :owner, :run)
            ON CONFLICT (topic) DO UPDATE
            SET epoch = topic_fences.epoch + 1, owner = excluded.owner,
                run_id = excluded.run_id, taken_at = now()
            RETURNING topic, epoch, owner, run_id
            """
        ),
        {"topic": topic, "owner": owner, "run": run_id},
    ).one()
    return Fence(*row)


def read_fence(conn: Connection, topic: str, *, lock: bool = True) -> Fence | None:
    """The topic's fence, held FOR SHARE until the transaction ends (planners wait)."""
    row = conn.execute(
        text(
            "SELECT topic, epoch, owner, run_id FROM topic_fences WHERE topic = :topic"
            + (" FOR SHARE" if lock else "")
        ),
        {"topic": topic},
    ).one_or_none()
    return Fence(*row) if row else None


def publish_in_flight(
    conn: Connection, topic: str, other_than: int | None, within_seconds: float
) -> RunRecord | None:
    """Another run's unconfirmed publish to this topic stamped within the window, if any.

    Its send may still be on the wire: the topic must not change under it.
    """
    row = conn.execute(
        text(
            f"""
            SELECT {_RUN_COLUMNS} FROM runs
            WHERE topic = :topic AND publish_state = '{PublishState.INTENT}'
              AND id IS DISTINCT FROM :other
              AND publish_intent_at > clock_timestamp() - make_interval(secs => :window)
            ORDER BY publish_intent_at DESC LIMIT 1
            """
        ),
        {"topic": topic, "other": other_than, "window": within_seconds},
    ).one_or_none()
    return RunRecord.of(row) if row else None


# --- the FCM target the state belongs to ------------------------------------------------------


def bound_target(conn: Connection, *, lock: bool = False) -> tuple[str, str] | None:
    """(project id, endpoint) this database's state describes, or None if never bound."""
    row = conn.execute(
        text(
            "SELECT project_id, endpoint FROM fcm_target WHERE id = 1"
            + (" FOR SHARE" if lock else "")
        )
    ).one_or_none()
    return (str(row[0]), str(row[1])) if row else None


def bind_target(conn: Connection, project_id: str, endpoint: str) -> None:
    """Bind (or re-bind) the state to a target."""
    conn.execute(
        text(
            """
            INSERT INTO fcm_target (id, project_id, endpoint) VALUES (1, :project, :endpoint)
            ON CONFLICT (id) DO UPDATE
            SET project_id = excluded.project_id, endpoint = excluded.endpoint, bound_at = now()
            """
        ),
        {"project": project_id, "endpoint": endpoint},
    )


def target_state_counts(conn: Connection) -> dict[str, int]:
    """What a reset of the FCM-side state would delete or clear, per kind."""
    row = conn.execute(
        text(
            """
            SELECT (SELECT count(*) FROM subscriptions),
                   (SELECT count(*) FROM runs),
                   (SELECT count(*) FROM token_failures),
                   (SELECT count(*) FROM tokens WHERE invalid_at IS NOT NULL),
                   (SELECT count(*) FROM topic_fences)
            """
        )
    ).one()
    names = ("subscriptions", "runs", "token_failures", "dead_marks", "topic_fences")
    return dict(zip(names, (int(n) for n in row), strict=True))


def reset_target_state(conn: Connection) -> None:
    """Forget every fact about the old target; keep tokens and their forgotten marks
    (an opt-out is the user's, whatever the target)."""
    conn.execute(text("DELETE FROM token_failures"))
    conn.execute(text("DELETE FROM subscriptions"))
    conn.execute(text("DELETE FROM topic_fences"))
    conn.execute(text("DELETE FROM runs"))
    conn.execute(
        text(
            "UPDATE tokens SET invalid_at = NULL, invalid_reason = NULL "
            "WHERE invalid_at IS NOT NULL"
        )
    )


# --- reads behind report and status ----------------------------------------------------------

_FAILURES_SQL = """
SELECT t.token, f.op, f.code, f.reason, f.attempts, f.first_seen, f.last_seen,
       f.run_id, r.run_date, r.prefix, f.topic, f.resolved_at IS NOT NULL AS resolved
FROM token_failures f
JOIN tokens t ON t.id = f.token_id
LEFT JOIN runs r ON r.id = f.run_id
WHERE {where}
ORDER BY f.last_seen DESC, f.id DESC
LIMIT :limit
"""

# Each filter is a fixed fragment with bound parameters; only the choice of fragments varies.
_FILTER_SQL = {
    "date": "r.run_date = :date",
    "run_id": "f.run_id = :run_id",
    "code": "f.code = :code",
    "op": "f.op = :op",
    "campaigns": (
        "(r.campaign_id = ANY(:campaigns) OR (f.run_id IS NULL AND f.topic = ANY(:pool_topics)))"
    ),
}


def topics_of_failures_without_run(conn: Connection) -> list[str]:
    """Topics of failures recorded outside a run (by a repair)."""
    return list(
        conn.scalars(text("SELECT DISTINCT topic FROM token_failures WHERE run_id IS NULL"))
    )


def failure_rows(
    conn: Connection,
    filters: dict[str, object],
    *,
    include_resolved: bool,
    limit: int | None,
) -> list[Any]:
    """token_failures rows with their token and run, newest first; `filters` are ANDed
    (date, run_id, code, op, campaigns with pool_topics: the campaigns' runs, and failures
    a repair recorded without a run on one of those topics)."""
    where = [] if include_resolved else ["f.resolved_at IS NULL"]
    where += [fragment for name, fragment in _FILTER_SQL.items() if name in filters]
    sql = _FAILURES_SQL.format(where=" AND ".join(where) or "TRUE")
    return list(conn.execute(text(sql), {**filters, "limit": limit}).all())


_RUN_SELECT = f"""
SELECT r.id, c.name AS campaign, r.prefix, r.run_date, r.topic, r.status, r.audience_size,
       r.added + coalesce(h.added, 0) AS added, r.removed + coalesce(h.removed, 0) AS removed,
       r.failed, r.retries + coalesce(h.retries, 0) AS retries,
       r.attempts + coalesce(h.attempts, 0) AS attempts,
       r.wait_seconds + coalesce(h.wait_seconds, 0) AS wait_seconds,
       extract(epoch FROM r.finished_at - r.started_at) + coalesce(h.duration, 0) AS duration,
       r.publish_state = '{PublishState.SENT}' AS published, r.message_id, r.note, r.started_at,
       r.newly_dead + coalesce(h.newly_dead, 0) AS newly_dead, r.suppressed,
       r.attempt AS tries, r.campaign_id, r.publish_state, r.publish_intent_at
FROM runs r
JOIN campaigns c ON c.id = r.campaign_id
LEFT JOIN LATERAL (
    SELECT sum(a.added) AS added, sum(a.removed) AS removed, sum(a.retries) AS retries,
           sum(a.attempts) AS attempts, sum(a.wait_seconds) AS wait_seconds,
           sum(a.newly_dead) AS newly_dead,
           sum(extract(epoch FROM a.finished_at - a.started_at)) AS duration
    FROM run_attempts a WHERE a.run_id = r.id
) h ON TRUE
"""
"""A day's run: the day's totals over all its attempts (what it added, removed, found dead,
retried, waited, took), the current attempt's plan and status, and the publish record."""

_CAMPAIGN_FILTER = "WHERE (CAST(:campaigns AS bigint[]) IS NULL OR r.campaign_id = ANY(:campaigns))"


def run_summary_rows(
    conn: Connection, *, campaigns: list[int] | None, limit: int | None
) -> list[Any]:
    """Days' runs, the most recent first (by date, then start time); `campaigns` narrows
    them to those campaigns' (None: every campaign's)."""
    sql = f"{_RUN_SELECT} {_CAMPAIGN_FILTER} ORDER BY {latest_run_first('r')} LIMIT :limit"
    return list(conn.execute(text(sql), {"campaigns": campaigns, "limit": limit}).all())


def latest_run_rows(conn: Connection, *, campaigns: list[int] | None) -> list[Any]:
    """The latest run of every campaign (or of the given ones), ordered by campaign name."""
    sql = (
        f"SELECT * FROM (SELECT DISTINCT ON (r.campaign_id) * FROM ({_RUN_SELECT} "
        f"{_CAMPAIGN_FILTER}) r ORDER BY r.campaign_id, {latest_run_first('r')}) latest "
        "ORDER BY campaign"
    )
    return list(conn.execute(text(sql), {"campaigns": campaigns}).all())


def attempt_rows(conn: Connection, run_ids: list[int]) -> list[Any]:
    """Every attempt of the given runs, each with its own figures, in order: the earlier
    ones kept in run_attempts and the current one in runs."""
    columns = (
        "run_id, attempt, topic, status, note, audience_size, to_add, to_remove, added, "
        "removed, newly_dead, failed, retries, attempts, wait_seconds, "
        "extract(epoch FROM finished_at - started_at) AS duration, started_at"
    )
    sql = f"""
    SELECT * FROM (
        SELECT {columns} FROM run_attempts WHERE run_id = ANY(:ids)
        UNION ALL
        SELECT {columns.replace("run_id, ", "id AS run_id, ", 1)} FROM runs
        WHERE id = ANY(:ids)
    ) every_attempt ORDER BY run_id, attempt
    """
    return list(conn.execute(text(sql), {"ids": list(run_ids)}).all())


def failure_groups(conn: Connection, run_ids: list[int], per_group: int | None) -> list[Any]:
    """The runs' unresolved failures grouped by (run, code, op): one row per token shown
    (at most `per_group` per group, the most recently seen first; None for all), each with
    its group's full count. Largest groups first."""
    sql = """
    WITH unresolved AS (
        SELECT f.run_id, f.code, f.op, f.token_id,
               count(*) OVER (PARTITION BY f.run_id, f.code, f.op) AS n,
               row_number() OVER (PARTITION BY f.run_id, f.code, f.op
                                  ORDER BY f.last_seen DESC, f.id DESC) AS rn
        FROM token_failures f
        WHERE f.run_id = ANY(:runs) AND f.resolved_at IS NULL
    )
    SELECT u.run_id, u.code, u.op, u.n, t.token
    FROM unresolved u JOIN tokens t ON t.id = u.token_id
    WHERE CAST(:per_group AS bigint) IS NULL OR u.rn <= :per_group
    ORDER BY u.run_id, u.n DESC, u.code, u.op, u.rn
    """
    return list(conn.execute(text(sql), {"runs": list(run_ids), "per_group": per_group}).all())


def dead_token_rows(conn: Connection, limit: int | None) -> list[Any]:
    """Tokens marked dead, the most recently marked first."""
    return list(
        conn.execute(
            text(
                """
                SELECT token, invalid_reason, invalid_at, dead_on, retried_on FROM tokens
                WHERE invalid_at IS NOT NULL ORDER BY invalid_at DESC, id DESC LIMIT :limit
                """
            ),
            {"limit": limit},
        ).all()
    )


# --- retention ----------------------------------------------------------------------------------

# Failure rows past retention that nothing needs: not of a campaign's latest run (report's
# first answer), and not an unresolved failure of work still owed (it explains the debt).
# Only report reads token_failures; runs, subscriptions and tokens are never purged.
_PURGEABLE = f"""
    SELECT f.id FROM token_failures f
    WHERE f.last_seen < :cutoff
      AND (f.run_id IS NULL OR f.run_id NOT IN (
          SELECT DISTINCT ON (campaign_id) id FROM runs
          ORDER BY campaign_id, {latest_run_first()}))
      AND NOT (f.resolved_at IS NULL AND EXISTS (
          SELECT 1 FROM subscriptions s
          WHERE s.topic = f.topic AND s.token_id = f.token_id AND s.status IN {PENDING_SQL}))
"""


def purgeable_failures(conn: Connection, cutoff: dt.datetime) -> int:
    """How many failure rows a purge with this cutoff would delete."""
    return int(conn.scalar(text(f"SELECT count(*) FROM ({_PURGEABLE}) doomed"), {"cutoff": cutoff}))


def purge_failures(conn: Connection, cutoff: dt.datetime, batch: int) -> int:
    """Delete at most `batch` purgeable failure rows, oldest first; returns how many.

    One bounded statement per transaction: row locks on a few thousand rows, never a table
    lock, and rows another transaction holds are skipped (the next batch gets them). The
    rows are picked once, in a CTE: as `id IN (subquery)`, a plan that scans the subquery
    again for each row (a nested loop) finds the rows it already deleted locked by itself,
    skips them and picks the next ones, so one statement deleted every purgeable row."""
    return conn.execute(
        text(
            f"""
            WITH doomed AS MATERIALIZED (
                {_PURGEABLE} ORDER BY f.last_seen, f.id LIMIT :batch FOR UPDATE OF f SKIP LOCKED)
            DELETE FROM token_failures f USING doomed WHERE f.id = doomed.id
            """
        ),
        {"cutoff": cutoff, "batch": batch},
    ).rowcount
