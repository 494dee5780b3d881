"""The SQL that matters: audience load, the diff, batch claims, outcomes, publish record.

Everything here is set-based and takes an open SQLAlchemy Connection, so the
caller decides the transaction: one for the plan, one per FCM batch.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

__all__ = [
    "COPY_CHUNK_BYTES",
    "Fence",
    "Plan",
    "RunRecord",
    "TokenOutcome",
    "add_progress",
    "audit_candidates",
    "bind_target",
    "bound_target",
    "claim_batch",
    "claim_publish",
    "confirm_publish",
    "confirmed_counts",
    "db_now",
    "finish_run",
    "forget_tokens",
    "get_run",
    "load_audience",
    "pending_counts",
    "pending_sample",
    "plan_topic",
    "publish_in_flight",
    "queue_full_reassert",
    "queue_heals",
    "queue_stale_removals",
    "read_fence",
    "record_outcomes",
    "refresh_publish_intent",
    "release_publish",
    "reset_target_state",
    "save_plan",
    "settle_failures",
    "stale_members",
    "start_run",
    "take_fence",
    "target_state_counts",
    "topics_owing",
    "topics_with_rows",
]

COPY_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class Plan:
    """What a day's diff decided for its topic."""

    topic: str
    audience_lines: int
    audience_size: int
    duplicates: int
    skipped_invalid: int
    members_before: int
    newly_removed: int
    to_add: int
    to_remove: int

    @property
    def churn(self) -> float:
        return self.newly_removed / self.members_before if self.members_before else 0.0


@dataclass(frozen=True)
class RunRecord:
    id: int
    prefix: str
    run_date: dt.date
    topic: str
    status: str
    publish_state: str
    message_id: str | None


@dataclass(frozen=True)
class TokenOutcome:
    """One token's answer from FCM, already mapped through the error table."""

    token_id: int
    status: str  # the subscription status to record
    code: str | None  # error-table code, None on a clean success
    reason: str | None  # raw reason from FCM
    failed: bool  # counts as a failure for report
    invalid: bool  # the token is dead for good

    def distrusted(self, pending: str) -> TokenOutcome:
        """The same answer, not believed (the dead-token guard): the work stays owed."""
        return TokenOutcome(self.token_id, pending, self.code, self.reason, True, False)


def load_audience(conn: Connection, tokens: Iterable[str]) -> int:
    """COPY the audience into a transaction-scoped temp table; returns the line count.

    Tokens were validated against [A-Za-z0-9_:.-], so they need no COPY escaping.
    """
    conn.execute(text("CREATE TEMP TABLE audience_in (token text NOT NULL) ON COMMIT DROP"))
    raw = conn.connection.driver_connection
    count = 0
    with raw.cursor() as cur, cur.copy("COPY audience_in (token) FROM STDIN") as copy:
        buf: list[str] = []
        size = 0
        for token in tokens:
            buf.append(token)
            size += len(token) + 1
            count += 1
            if size >= COPY_CHUNK_BYTES:
                copy.write("\n".join(buf) + "\n")
                buf, size = [], 0
        if buf:
            copy.write("\n".join(buf) + "\n")
    return count


def plan_topic(conn: Connection, topic: str, run_id: int | None, audience_lines: int) -> Plan:
    """Diff audience_in against the topic's subscription rows and queue the work.

    to subscribe = usable audience - confirmed members;
    to unsubscribe = (members and owed subscriptions) - usable audience.
    Pending rows are the queue the batches drain; replanning is idempotent.
    """
    conn.execute(
        text(
            "INSERT INTO tokens (token) SELECT DISTINCT token FROM audience_in "
            "ON CONFLICT (token_key) DO NOTHING"
        )
    )
    conn.execute(
        text(
            """
            CREATE TEMP TABLE audience_ids ON COMMIT DROP AS
            SELECT t.id,
                   (t.invalid_at IS NOT NULL OR t.forgotten_at IS NOT NULL) AS unusable
            FROM tokens t
            WHERE t.token_key IN (SELECT md5(token)::uuid FROM audience_in)
            """
        )
    )
    conn.execute(text("ANALYZE audience_ids"))
    size, skipped = conn.execute(
        text("SELECT count(*), count(*) FILTER (WHERE unusable) FROM audience_ids")
    ).one()
    members_before = conn.scalar(
        text(
            "SELECT count(*) FROM subscriptions WHERE topic = :topic "
            "AND status IN ('subscribed', 'pending_subscribe')"
        ),
        {"topic": topic},
    )
    newly_removed = conn.execute(
        text(
            """
            UPDATE subscriptions s
            SET status = 'pending_unsubscribe', attempts = 0, last_code = NULL,
                last_reason = NULL, run_id = :run_id, updated_at = now()
            WHERE s.topic = :topic
              AND s.status IN ('subscribed', 'pending_subscribe')
              AND NOT EXISTS (
                  SELECT 1 FROM audience_ids a WHERE a.id = s.token_id AND NOT a.unusable)
            """
        ),
        {"topic": topic, "run_id": run_id},
    ).rowcount
    conn.execute(
        text(
            """
            INSERT INTO subscriptions (topic, token_id, status, run_id)
            SELECT :topic, a.id, 'pending_subscribe', :run_id
            FROM audience_ids a WHERE NOT a.unusable
            ON CONFLICT (topic, token_id) DO UPDATE
            SET status = 'pending_subscribe', attempts = 0, last_code = NULL,
                last_reason = NULL, run_id = excluded.run_id, updated_at = now()
            WHERE subscriptions.status IN ('unsubscribed', 'pending_unsubscribe')
            """
        ),
        {"topic": topic, "run_id": run_id},
    )
    to_add, to_remove = pending_counts(conn, topic)
    return Plan(
        topic=topic,
        audience_lines=audience_lines,
        audience_size=size,
        duplicates=audience_lines - size,
        skipped_invalid=skipped,
        members_before=members_before,
        newly_removed=newly_removed,
        to_add=to_add,
        to_remove=to_remove,
    )


def pending_counts(conn: Connection, topic: str) -> tuple[int, int]:
    """(owed subscriptions, owed removals) for a topic."""
    row = conn.execute(
        text(
            """
            SELECT count(*) FILTER (WHERE status = 'pending_subscribe'),
                   count(*) FILTER (WHERE status = 'pending_unsubscribe')
            FROM subscriptions WHERE topic = :topic AND status LIKE 'pending%'
            """
        ),
        {"topic": topic},
    ).one()
    return int(row[0]), int(row[1])


def pending_sample(conn: Connection, topic: str, status: str, limit: int = 10) -> list[str]:
    return list(
        conn.scalars(
            text(
                "SELECT t.token FROM subscriptions s JOIN tokens t ON t.id = s.token_id "
                "WHERE s.topic = :topic AND s.status = :status ORDER BY s.token_id LIMIT :n"
            ),
            {"topic": topic, "status": status, "n": limit},
        )
    )


def db_now(conn: Connection) -> dt.datetime:
    return conn.scalar(text("SELECT clock_timestamp()"))


def claim_batch(
    conn: Connection, topic: str, status: str, not_since: dt.datetime, limit: int
) -> list[tuple[int, str]]:
    """Lock up to `limit` pending rows not yet attempted since `not_since`.

    SKIP LOCKED lets several workers drain one topic without waiting on each other.
    """
    rows = conn.execute(
        text(
            """
            SELECT s.token_id, t.token
            FROM subscriptions s JOIN tokens t ON t.id = s.token_id
            WHERE s.topic = :topic AND s.status = :status
              AND (s.last_attempt_at IS NULL OR s.last_attempt_at < :since)
            ORDER BY s.token_id
            LIMIT :limit
            FOR UPDATE OF s SKIP LOCKED
            """
        ),
        {"topic": topic, "status": status, "since": not_since, "limit": limit},
    ).all()
    return [(int(r[0]), str(r[1])) for r in rows]


def record_outcomes(
    conn: Connection, topic: str, op: str, run_id: int | None, outcomes: Sequence[TokenOutcome]
) -> None:
    """Write a batch's answers: subscription rows, failures for report, dead tokens."""
    if not outcomes:
        return
    cols = {
        "ids": [o.token_id for o in outcomes],
        "statuses": [o.status for o in outcomes],
        "codes": [o.code for o in outcomes],
        "reasons": [o.reason for o in outcomes],
        "failed": [o.failed for o in outcomes],
    }
    outcome_rows = (
        "unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:codes AS text[]), "
        "CAST(:reasons AS text[]), CAST(:failed AS boolean[])) "
        "AS o(token_id, status, code, reason, failed)"
    )
    params = {**cols, "topic": topic, "op": op, "run_id": run_id}
    conn.execute(
        text(
            f"""
            UPDATE subscriptions s
            SET status = o.status, attempts = s.attempts + 1, last_attempt_at = clock_timestamp(),
                last_code = o.code, last_reason = o.reason,
                run_id = coalesce(:run_id, s.run_id), updated_at = now()
            FROM {outcome_rows}
            WHERE s.topic = :topic AND s.token_id = o.token_id
            """
        ),
        params,
    )
    conn.execute(
        text(
            f"""
            INSERT INTO token_failures (run_id, token_id, topic, op, code, reason)
            SELECT :run_id, o.token_id, :topic, :op, o.code, o.reason
            FROM {outcome_rows} WHERE o.failed
            ON CONFLICT (run_id, token_id, topic, op) DO UPDATE
            SET code = excluded.code, reason = excluded.reason,
                attempts = token_failures.attempts + 1, last_seen = now(), resolved_at = NULL
            """
        ),
        params,
    )
    conn.execute(
        text(
            f"""
            UPDATE token_failures f SET resolved_at = now()
            FROM {outcome_rows}
            WHERE NOT o.failed AND f.token_id = o.token_id AND f.topic = :topic
              AND f.op = :op AND f.resolved_at IS NULL
            """
        ),
        params,
    )
    dead = [o.token_id for o in outcomes if o.invalid]
    if dead:
        codes = {o.token_id: o.code for o in outcomes if o.invalid}
        conn.execute(
            text(
                """
                UPDATE tokens t SET invalid_at = now(), invalid_reason = d.code
                FROM unnest(CAST(:ids AS bigint[]), CAST(:codes AS text[])) AS d(id, code)
                WHERE t.id = d.id AND t.invalid_at IS NULL
                """
            ),
            {"ids": dead, "codes": [codes[i] for i in dead]},
        )


# --- runs -------------------------------------------------------------------------------------

_RUN_COLUMNS = "id, prefix, run_date, topic, status, publish_state, message_id"


def get_run(conn: Connection, prefix: str, day: dt.date) -> RunRecord | None:
    row = conn.execute(
        text(f"SELECT {_RUN_COLUMNS} FROM runs WHERE prefix = :prefix AND run_date = :day"),
        {"prefix": prefix, "day": day},
    ).one_or_none()
    return RunRecord(*row) if row else None


def start_run(
    conn: Connection,
    *,
    prefix: str,
    day: dt.date,
    topic: str,
    transport: str,
    audience_path: str,
) -> RunRecord:
    """Create the day's run row, or restart it for a rerun (publish state is kept)."""
    row = conn.execute(
        text(
            f"""
            INSERT INTO runs (prefix, run_date, topic, transport, audience_path, status)
            VALUES (:prefix, :day, :topic, :transport, :path, 'syncing')
            ON CONFLICT (prefix, run_date) DO UPDATE
            SET topic = excluded.topic, transport = excluded.transport,
                audience_path = excluded.audience_path, status = 'syncing',
                started_at = now(), finished_at = NULL, note = NULL
            RETURNING {_RUN_COLUMNS}
            """
        ),
        {
            "prefix": prefix,
            "day": day,
            "topic": topic,
            "transport": transport,
            "path": audience_path,
        },
    ).one()
    return RunRecord(*row)


def save_plan(conn: Connection, run_id: int, plan: Plan) -> None:
    conn.execute(
        text(
            """
            UPDATE runs SET audience_lines = :lines, audience_size = :size,
                duplicates = :dups, skipped_invalid = :skipped,
                to_add = :to_add, to_remove = :to_remove,
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
            "skipped": plan.skipped_invalid,
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
) -> None:
    """Add a batch's counts to its run, in the batch's own transaction."""
    conn.execute(
        text(
            """
            UPDATE runs SET added = added + :added, removed = removed + :removed,
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
        },
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


def finish_run(conn: Connection, run_id: int, status: str, note: str | None = None) -> None:
    conn.execute(
        text("UPDATE runs SET status = :status, note = :note, finished_at = now() WHERE id = :id"),
        {"id": run_id, "status": status, "note": note},
    )


def claim_publish(conn: Connection, run_id: int, *, republish: bool) -> bool:
    """Record the intent to publish before sending; only one caller can win it.

    The caller checks the topic's fence in the same transaction, so the intent is only
    ever recorded by the run that still owns the topic.
    """
    allowed = ("none", "intent") if republish else ("none",)
    row = conn.execute(
        text(
            """
            UPDATE runs
            SET publish_state = 'intent', publish_intent_at = clock_timestamp(),
                status = 'publishing'
            WHERE id = :id AND publish_state = ANY(:allowed)
            RETURNING id
            """
        ),
        {"id": run_id, "allowed": list(allowed)},
    ).one_or_none()
    return row is not None


def refresh_publish_intent(conn: Connection, run_id: int) -> None:
    """Stamp the intent before another send attempt: it marks a publish in flight."""
    conn.execute(
        text(
            "UPDATE runs SET publish_intent_at = clock_timestamp() "
            "WHERE id = :id AND publish_state = 'intent'"
        ),
        {"id": run_id},
    )


def confirm_publish(
    conn: Connection, run_id: int, message_id: str | None, note: str | None = None
) -> None:
    conn.execute(
        text(
            """
            UPDATE runs SET publish_state = 'sent', message_id = :mid, published_at = now(),
                status = 'published', finished_at = now(), note = :note
            WHERE id = :id
            """
        ),
        {"id": run_id, "mid": message_id, "note": note},
    )


def release_publish(conn: Connection, run_id: int, note: str) -> None:
    """FCM said no for sure: nothing went out, so a later run may try again."""
    conn.execute(
        text(
            "UPDATE runs SET publish_state = 'none', status = 'failed', note = :note, "
            "finished_at = now() WHERE id = :id AND publish_state = 'intent'"
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
            WHERE topic = :topic AND publish_state = 'intent'
              AND id IS DISTINCT FROM :other
              AND publish_intent_at > clock_timestamp() - make_interval(secs => :window)
            ORDER BY publish_intent_at DESC LIMIT 1
            """
        ),
        {"topic": topic, "other": other_than, "window": within_seconds},
    ).one_or_none()
    return RunRecord(*row) if row else None


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


# --- repairs ----------------------------------------------------------------------------------


def topics_with_rows(conn: Connection) -> list[str]:
    return list(conn.scalars(text("SELECT DISTINCT topic FROM subscriptions ORDER BY topic")))


def stale_members(conn: Connection, topics: Sequence[str]) -> int:
    """Rows that still count as members but whose token is invalid or forgotten."""
    return conn.scalar(
        text(
            """
            SELECT count(*) FROM subscriptions s JOIN tokens t ON t.id = s.token_id
            WHERE s.topic = ANY(:topics) AND s.status IN ('subscribed', 'pending_subscribe')
              AND (t.invalid_at IS NOT NULL OR t.forgotten_at IS NOT NULL)
            """
        ),
        {"topics": list(topics)},
    )


def queue_stale_removals(conn: Connection, topics: Sequence[str]) -> int:
    """Queue the removal of invalid or forgotten tokens from every topic given."""
    return conn.execute(
        text(
            """
            UPDATE subscriptions s
            SET status = 'pending_unsubscribe', attempts = 0, updated_at = now()
            FROM tokens t
            WHERE t.id = s.token_id AND s.topic = ANY(:topics)
              AND s.status IN ('subscribed', 'pending_subscribe')
              AND (t.invalid_at IS NOT NULL OR t.forgotten_at IS NOT NULL)
            """
        ),
        {"topics": list(topics)},
    ).rowcount


def confirmed_counts(conn: Connection, topic: str) -> tuple[int, int]:
    """(confirmed members, confirmed removals) of a topic: what --full re-asserts."""
    row = conn.execute(
        text(
            """
            SELECT count(*) FILTER (WHERE status = 'subscribed'),
                   count(*) FILTER (WHERE status = 'unsubscribed')
            FROM subscriptions WHERE topic = :topic
            """
        ),
        {"topic": topic},
    ).one()
    return int(row[0]), int(row[1])


def queue_full_reassert(conn: Connection, topic: str) -> tuple[int, int]:
    """Turn every confirmed row of a topic back into owed work.

    Being pending, the work survives a crash: the next reconcile picks it up.
    """
    rows = conn.execute(
        text(
            """
            UPDATE subscriptions
            SET status = CASE status WHEN 'subscribed' THEN 'pending_subscribe'
                                     ELSE 'pending_unsubscribe' END,
                attempts = 0, updated_at = now()
            WHERE topic = :topic AND status IN ('subscribed', 'unsubscribed')
            RETURNING status
            """
        ),
        {"topic": topic},
    ).scalars()
    statuses = list(rows)
    return statuses.count("pending_subscribe"), statuses.count("pending_unsubscribe")


def audit_candidates(
    conn: Connection, topics: Sequence[str], sample: int | None
) -> list[tuple[str, dict[str, str]]]:
    """Tokens known on these topics, with the table's status per topic (sampled)."""
    rows = conn.execute(
        text(
            """
            WITH picked AS (
                SELECT DISTINCT s.token_id FROM subscriptions s WHERE s.topic = ANY(:topics)
            ), chosen AS (
                SELECT token_id FROM picked
                ORDER BY CASE WHEN CAST(:sample AS int) IS NULL THEN token_id::float8
                              ELSE random() END
                LIMIT CAST(:sample AS int)
            )
            SELECT t.token, coalesce(jsonb_object_agg(s.topic, s.status)
                                     FILTER (WHERE s.topic = ANY(:topics)), '{}')
            FROM chosen c JOIN tokens t ON t.id = c.token_id
            LEFT JOIN subscriptions s ON s.token_id = c.token_id
            GROUP BY t.id, t.token ORDER BY t.id
            """
        ),
        {"topics": list(topics), "sample": sample},
    ).all()
    return [(str(token), dict(states)) for token, states in rows]


def queue_heals(conn: Connection, heals: Sequence[tuple[str, str, str]]) -> None:
    """Owe FCM a call for each drifted (token, topic, pending status) an audit found."""
    if not heals:
        return
    conn.execute(
        text(
            """
            INSERT INTO subscriptions (topic, token_id, status)
            SELECT h.topic, t.id, h.status
            FROM unnest(CAST(:tokens AS text[]), CAST(:topics AS text[]),
                        CAST(:statuses AS text[])) AS h(token, topic, status)
            JOIN tokens t ON t.token_key = md5(h.token)::uuid
            ON CONFLICT (topic, token_id) DO UPDATE
            SET status = excluded.status, attempts = 0, updated_at = now()
            """
        ),
        {
            "tokens": [h[0] for h in heals],
            "topics": [h[1] for h in heals],
            "statuses": [h[2] for h in heals],
        },
    )


def forget_tokens(conn: Connection, tokens: Iterable[str]) -> tuple[int, int]:
    """Mark tokens gone (also ones never seen, so later audiences skip them).

    Returns (tokens marked, subscription rows now owed a removal).
    """
    conn.execute(text("CREATE TEMP TABLE forget_in (token text NOT NULL) ON COMMIT DROP"))
    raw = conn.connection.driver_connection
    with raw.cursor() as cur, cur.copy("COPY forget_in (token) FROM STDIN") as copy:
        for token in tokens:
            copy.write_row((token,))
    conn.execute(
        text(
            "INSERT INTO tokens (token) SELECT DISTINCT token FROM forget_in "
            "ON CONFLICT (token_key) DO NOTHING"
        )
    )
    marked = conn.execute(
        text(
            """
            UPDATE tokens SET forgotten_at = now()
            WHERE token_key IN (SELECT md5(token)::uuid FROM forget_in)
              AND forgotten_at IS NULL
            """
        )
    ).rowcount
    queued = conn.execute(
        text(
            """
            UPDATE subscriptions s
            SET status = 'pending_unsubscribe', attempts = 0, updated_at = now()
            FROM tokens t
            WHERE t.id = s.token_id AND t.forgotten_at IS NOT NULL
              AND t.token_key IN (SELECT md5(token)::uuid FROM forget_in)
              AND s.status IN ('subscribed', 'pending_subscribe')
            """
        )
    ).rowcount
    return marked, queued


def topics_owing(conn: Connection) -> list[str]:
    return list(
        conn.scalars(
            text(
                "SELECT DISTINCT topic FROM subscriptions WHERE status LIKE 'pending%' "
                "ORDER BY topic"
            )
        )
    )
