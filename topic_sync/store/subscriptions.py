"""The SQL of the subscription table: audience load, the diff, batch claims, outcomes, repairs.

Everything here is set-based and takes an open SQLAlchemy Connection, so the caller decides
the transaction: one for the plan, one per FCM batch. States come from topic_sync.states.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Engine, text

from topic_sync.errors import InputFileError
from topic_sync.states import PublishState, SubscriptionStatus
from topic_sync.store.db import STATEMENT_TIMEOUT_MS, connect_args, libpq_url, planner_setting
from topic_sync.store.fragments import MEMBER_SQL, PENDING_SQL

__all__ = [
    "CLAIM_BATCH_SQL",
    "refresh_statistics",
    "psycopg_connection",
    "COPY_CHUNK_BYTES",
    "Plan",
    "TokenOutcome",
    "AUDIENCE_QUERY_NAME",
    "audience_query_column",
    "audience_query_connection",
    "audience_query_rows",
    "audit_page",
    "audit_sample",
    "claim_batch",
    "confirmed_counts",
    "db_now",
    "forget_tokens",
    "unforget_tokens",
    "last_publishes",
    "load_audience",
    "pending_counts",
    "pending_sample",
    "plan_topic",
    "pool_costs",
    "stage_audience",
    "StagedAudience",
    "TopicCost",
    "queue_full_reassert",
    "queue_heals",
    "queue_stale_removals",
    "record_outcomes",
    "stale_members",
    "topics_owing",
    "topics_with_rows",
]

COPY_CHUNK_BYTES = 1 << 16
# The columns whose statistics the plan's joins and the batches' claims are planned on.
TOKEN_STATS = "(id, token_key, invalid_at, forgotten_at)"
SUBSCRIPTION_STATS = "(topic, status, token_id)"


@dataclass(frozen=True)
class Plan:
    """What a day's diff decided for its topic."""

    topic: str
    audience_lines: int
    audience_size: int
    duplicates: int
    skipped: int  # audience tokens left out: dead or forgotten (runs.skipped_invalid)
    members_before: int
    newly_removed: int
    to_add: int
    to_remove: int
    suppressed: int = 0  # of skipped: forgotten (opted out)
    retried_dead: int = 0  # dead tokens back in a later audience, tried once more

    @property
    def skipped_dead(self) -> int:
        """Of skipped: known dead and not forgotten (a forgotten token counts as suppressed)."""
        return self.skipped - self.suppressed


@dataclass(frozen=True)
class TokenOutcome:
    """One token's answer from FCM, already mapped through the error table."""

    token_id: int
    status: SubscriptionStatus  # the subscription status to record
    code: str | None  # error-table code, None on a clean success
    reason: str | None  # raw reason from FCM
    failed: bool  # counts as a failure for report
    invalid: bool  # the token is dead for good

    def distrusted(self, pending: SubscriptionStatus) -> TokenOutcome:
        """The same answer, not believed (the dead-token guard): the work stays owed."""
        return TokenOutcome(self.token_id, pending, self.code, self.reason, True, False)


def load_audience(conn: Connection, tokens: Iterable[str]) -> int:
    """COPY the audience into a transaction-scoped temp table; returns the line count.

    Tokens were validated against [A-Za-z0-9_:.-], so they need no COPY escaping.
    """
    conn.execute(text("CREATE TEMP TABLE audience_in (token text NOT NULL) ON COMMIT DROP"))
    raw = psycopg_connection(conn)
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


AUDIENCE_QUERY_NAME = "query"
"""How an audience read from a query is named in messages (rows stand for lines)."""

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)?")
_QUERY_START = re.compile(r"\s*\(*\s*(?:select|with|values|table)\b", re.I)


def _query_source(query: str) -> sql.Composable:
    """The query as SQL to select from: a SELECT as given, or a table name made a quoted
    identifier (folded to lower case, as PostgreSQL folds an unquoted name)."""
    stripped = query.strip().rstrip(";").strip()
    if _TABLE_NAME.fullmatch(stripped):
        return sql.SQL("SELECT * FROM {}").format(sql.Identifier(*stripped.lower().split(".")))
    if not _QUERY_START.match(stripped):
        raise InputFileError(
            AUDIENCE_QUERY_NAME,
            "--audience-query must be a SELECT (or WITH/VALUES/TABLE) query or a table name "
            f"such as schema.table; got {query.strip()[:60]!r}",
        )
    return sql.SQL(stripped)  # the operator's own query


def _token_column(names: list[str], wanted: str | None) -> str:
    """The result column holding the tokens: the one named, the only one, or `token`."""
    if wanted is not None:
        for candidate in (wanted, wanted.strip().lower()):
            if candidate in names:
                return candidate
        problem = f"no column {wanted!r} in the query's result"
    elif len(names) == 1:
        return names[0]
    elif "token" in names:
        return "token"
    else:
        problem = "several columns and none named 'token' (choose one with --token-column)"
    raise InputFileError(AUDIENCE_QUERY_NAME, f"{problem} (columns: {', '.join(names)})")


@contextlib.contextmanager
def audience_query_connection(
    engine: Engine | None, url: str | None
) -> Iterator[psycopg.Connection[Any]]:
    """A connection of its own to read the audience from: another database's (url), or one
    more of the job's. The job's load runs its own COPY on another connection meanwhile."""
    if url is None:
        assert engine is not None, "the job's database is the audience's"
        pooled = engine.raw_connection()
        try:
            raw = pooled.driver_connection
            assert isinstance(raw, psycopg.Connection)
            raw.rollback()
            yield raw
        finally:
            pooled.close()
        return
    with psycopg.connect(libpq_url(url), **connect_args()) as raw:
        yield raw


AUDIENCE_FETCH_ROWS = 10_000  # rows fetched from the query's cursor per round trip


def _read_only(raw: psycopg.Connection[Any]) -> None:
    """Start a transaction in which the session cannot write: the transaction is READ ONLY,
    and so is every later one of the session, until the rollback that ends it undoes that
    (a SET inside a transaction that is rolled back is undone, so a pooled connection comes
    back as it was)."""
    raw.rollback()
    with raw.cursor() as cur:
        cur.execute("SET TRANSACTION READ ONLY")
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cur.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")


@contextlib.contextmanager
def _one_statement(raw: psycopg.Connection[Any], statement: sql.Composed) -> Iterator[Any]:
    """A server-side cursor over exactly one statement. DECLARE goes through the extended
    protocol, whose Parse message takes one statement: a query that smuggles in
    `...; COMMIT; DELETE ...` is refused whole instead of run in three parts, as the simple
    protocol would. Declaring plans the query and describes its columns; rows come only
    when fetched."""
    cur = raw.cursor(name="topic_sync_audience")
    cur.itersize = AUDIENCE_FETCH_ROWS
    try:
        cur.execute(statement)
        yield cur
    finally:
        cur.close()


def _refused(error: psycopg.Error) -> InputFileError:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if "multiple commands" in reason:
        reason = "it is more than one statement; --audience-query takes exactly one query"
    return InputFileError(AUDIENCE_QUERY_NAME, f"PostgreSQL refused it: {reason}")


def _described_column(
    raw: psycopg.Connection[Any], source: sql.Composable, token_column: str | None
) -> str:
    with _one_statement(raw, sql.SQL("SELECT * FROM ({}) AS audience").format(source)) as cur:
        names = [column.name for column in cur.description or ()]
    return _token_column(names, token_column)


def audience_query_column(
    raw: psycopg.Connection[Any], query: str, token_column: str | None
) -> str:
    """The column the query's tokens would be read from, found by describing the query in
    a read-only transaction without running it (for `doctor`); the transaction is rolled
    back. A query PostgreSQL refuses is an input error naming the query."""
    source = _query_source(query)
    try:
        _read_only(raw)
        return _described_column(raw, source, token_column)
    except psycopg.Error as error:
        raise _refused(error) from None
    finally:
        with contextlib.suppress(psycopg.Error):
            raw.rollback()


def audience_query_rows(
    raw: psycopg.Connection[Any], query: str, token_column: str | None
) -> Generator[str | None, None, None]:
    """The token column of the query's rows as text (None for NULL), streamed from a cursor
    over the one statement, in a transaction of a session that cannot write.

    A query PostgreSQL refuses (syntax, several statements, a missing table, no privilege, a
    write) is an input error naming the query; the transaction is rolled back whatever
    happens.
    """
    source = _query_source(query)
    try:
        _read_only(raw)
        column = _described_column(raw, source, token_column)
        statement = sql.SQL("SELECT CAST(a.{} AS text) FROM ({}) AS a").format(
            sql.Identifier(column), source
        )
        with _one_statement(raw, statement) as cur:
            for (value,) in cur:
                yield value
    except psycopg.Error as error:
        raise _refused(error) from None
    finally:
        with contextlib.suppress(psycopg.Error):
            raw.rollback()


@dataclass(frozen=True)
class StagedAudience:
    """The day's audience as the diff sees it (stage_audience), whatever the topic."""

    lines: int
    size: int  # distinct tokens
    skipped: int  # dead or forgotten, left out
    suppressed: int  # of skipped: forgotten (opted out)
    retried: int  # dead tokens back in the audience, tried once more


def stage_audience(
    conn: Connection, audience_lines: int, day: dt.date | None = None
) -> StagedAudience:
    """Turn audience_in into `audience_ids` (each distinct token's id, and whether it is
    unusable: dead or forgotten), adding the tokens never seen before.

    With the audience's `day`: a token marked dead by a run of an earlier date and back in
    this audience is tried once more (its mark lifted, `retried_on` = day): an unregistered
    token can come back (a restored backup, an app reinstalled), and "invalid argument" or
    "sender id mismatch" can be one transient systemic answer about a valid token. If FCM
    says so again on this later date, it is marked again, with `dead_on` = day, and that
    second observation is final: not tried again until it has been alive and died anew.

    What it stages is the same for every topic, so the pool's costs (pool_costs) and the
    chosen topic's diff (plan_topic) read the one audience_ids.
    """
    # Each distinct token once, with its key (the tokens table is unique on md5(token)).
    conn.execute(
        text(
            "CREATE TEMP TABLE audience_keys ON COMMIT DROP AS "
            "SELECT DISTINCT ON (key) md5(token)::uuid AS key, token FROM audience_in"
        )
    )
    conn.execute(text("ANALYZE audience_keys (key)"))
    # New tokens: the known ones are left out by a join first, since an insert that
    # conflicts costs nearly what one that writes does (half a day-2 plan's token step);
    # the unique index still settles a token written meanwhile, without locking anything.
    inserted = conn.execute(
        text(
            "INSERT INTO tokens (token) SELECT k.token FROM audience_keys k "
            "WHERE NOT EXISTS (SELECT 1 FROM tokens t WHERE t.token_key = k.key) "
            "ON CONFLICT (token_key) DO NOTHING"
        )
    ).rowcount
    # Statistics before every join below: planned on stale numbers (the first days after
    # install, a second run the same morning) a diff of millions can go quadratic. Only the
    # columns the joins and filters use: the tokens themselves are wide and cost most.
    if inserted:
        conn.execute(text(f"ANALYZE tokens {TOKEN_STATS}"))
    retried = 0
    if day is not None:
        retried = conn.execute(
            text(
                """
                UPDATE tokens t SET invalid_at = NULL, invalid_reason = NULL, retried_on = :day
                FROM audience_keys k
                WHERE t.token_key = k.key AND t.invalid_at IS NOT NULL
                  AND t.forgotten_at IS NULL
                  AND t.dead_on < :day AND (t.retried_on IS NULL OR t.retried_on < t.dead_on)
                """
            ),
            {"day": day},
        ).rowcount
    conn.execute(
        text(
            """
            CREATE TEMP TABLE audience_ids ON COMMIT DROP AS
            SELECT t.id,
                   (t.invalid_at IS NOT NULL OR t.forgotten_at IS NOT NULL) AS unusable,
                   t.forgotten_at IS NOT NULL AS suppressed
            FROM audience_keys k JOIN tokens t ON t.token_key = k.key
            """
        )
    )
    conn.execute(text("ANALYZE audience_ids"))
    conn.execute(text(f"ANALYZE subscriptions {SUBSCRIPTION_STATS}"))
    size, skipped, suppressed = conn.execute(
        text(
            "SELECT count(*), count(*) FILTER (WHERE unusable), "
            "count(*) FILTER (WHERE suppressed) FROM audience_ids"
        )
    ).one()
    return StagedAudience(audience_lines, size, skipped, suppressed, retried)


def plan_topic(
    conn: Connection,
    topic: str,
    run_id: int | None,
    audience_lines: int,
    day: dt.date | None = None,
    *,
    staged: StagedAudience | None = None,
) -> Plan:
    """Diff the staged audience against the topic's subscription rows and queue the work
    (stages audience_in first unless `staged` says it was: see stage_audience).

    to subscribe = usable audience - confirmed members;
    to unsubscribe = (members and owed subscriptions) - usable audience.
    Pending rows are the queue the batches drain; replanning is idempotent.
    """
    if staged is None:
        staged = stage_audience(conn, audience_lines, day)
    # The usable audience without a row for the topic is read here, before anything writes
    # the table: asked while inserting into it, an anti-join planned on an empty table
    # rescans every page the insert adds, for every row (44 s for 50,000 rows on day one).
    conn.execute(text("DROP TABLE IF EXISTS audience_unlisted"))
    conn.execute(
        text(
            """
            CREATE TEMP TABLE audience_unlisted ON COMMIT DROP AS
            SELECT a.id FROM audience_ids a
            WHERE NOT a.unusable
              AND NOT EXISTS (SELECT 1 FROM subscriptions s
                              WHERE s.topic = :topic AND s.token_id = a.id)
            """
        ),
        {"topic": topic},
    )
    members_before = conn.scalar(
        text(f"SELECT count(*) FROM subscriptions WHERE topic = :topic AND status IN {MEMBER_SQL}"),
        {"topic": topic},
    )
    newly_removed = conn.execute(
        text(
            f"""
            UPDATE subscriptions s
            SET status = '{SubscriptionStatus.PENDING_UNSUBSCRIBE}', attempts = 0, last_code = NULL,
                last_reason = NULL, run_id = :run_id, forgotten_from = NULL, updated_at = now()
            WHERE s.topic = :topic
              AND s.status IN {MEMBER_SQL}
              AND NOT EXISTS (
                  SELECT 1 FROM audience_ids a WHERE a.id = s.token_id AND NOT a.unusable)
            """
        ),
        {"topic": topic, "run_id": run_id},
    ).rowcount
    # Audience members owed a removal (or removed) are owed a subscription again...
    conn.execute(
        text(
            f"""
            UPDATE subscriptions s
            SET status = '{SubscriptionStatus.PENDING_SUBSCRIBE}', attempts = 0, last_code = NULL,
                last_reason = NULL, run_id = :run_id, forgotten_from = NULL, updated_at = now()
            FROM audience_ids a
            WHERE s.topic = :topic AND s.token_id = a.id AND NOT a.unusable
              AND s.status IN ('{SubscriptionStatus.UNSUBSCRIBED}',
                               '{SubscriptionStatus.PENDING_UNSUBSCRIBE}')
            """
        ),
        {"topic": topic, "run_id": run_id},
    )
    # ...and the rest of the audience is new to the topic: only those rows are written (an
    # insert that conflicts costs nearly what one that writes does); the primary key still
    # skips a row written meanwhile, without a lock.
    conn.execute(
        text(
            f"""
            INSERT INTO subscriptions (topic, token_id, status, run_id)
            SELECT :topic, a.id, '{SubscriptionStatus.PENDING_SUBSCRIBE}', :run_id
            FROM audience_unlisted a
            ON CONFLICT (topic, token_id) DO NOTHING
            """
        ),
        {"topic": topic, "run_id": run_id},
    )
    conn.execute(text(f"ANALYZE subscriptions {SUBSCRIPTION_STATS}"))
    to_add, to_remove = pending_counts(conn, topic)
    return Plan(
        topic=topic,
        audience_lines=staged.lines,
        audience_size=staged.size,
        duplicates=staged.lines - staged.size,
        skipped=staged.skipped,
        members_before=members_before,
        newly_removed=newly_removed,
        to_add=to_add,
        to_remove=to_remove,
        suppressed=staged.suppressed,
        retried_dead=staged.retried,
    )


@dataclass(frozen=True)
class TopicCost:
    """What syncing one pool topic to the staged audience would take, and its history."""

    topic: str
    to_add: int  # what plan_topic would queue: usable audience - confirmed members
    to_remove: int  # members and owed work outside the usable audience
    used: bool  # it has members or owed work, or a run was planned on it
    last_published: dt.datetime | None  # its latest publish, sent or possibly sent (intent)

    @property
    def operations(self) -> int:
        return self.to_add + self.to_remove


# When a message last went to a topic (sent, or possibly sent: an intent), for the rest period.
_LAST_PUBLISHED_SQL = f"""(SELECT max(coalesce(r.published_at, r.publish_intent_at)) FROM runs r
        WHERE r.topic = p.topic
          AND r.publish_state IN ('{PublishState.SENT}', '{PublishState.INTENT}'))"""

# Per pool topic, from the rows that can cost anything (members and owed work; a confirmed
# removal costs nothing either way), joined to the usable audience:
#   to_add    = |usable| - members in it (an owed row in it becomes an owed subscription)
#   to_remove = members outside it + owed rows outside it (they become owed removals)
# which is exactly what plan_topic then queues. One statement for the whole pool; the live
# rows it reads are an index-only scan of ix_subscriptions_live (migration 0012), so its cost
# follows the pool's members and owed work, never the confirmed removals piling up.
POOL_COSTS_SQL = f"""
WITH held AS (
    SELECT s.topic,
           count(*) FILTER (WHERE s.status = '{SubscriptionStatus.SUBSCRIBED}') AS members,
           count(a.id) FILTER (WHERE s.status = '{SubscriptionStatus.SUBSCRIBED}') AS members_kept,
           count(*) FILTER (WHERE s.status <> '{SubscriptionStatus.SUBSCRIBED}') AS owed,
           count(a.id) FILTER (WHERE s.status <> '{SubscriptionStatus.SUBSCRIBED}') AS owed_kept
    FROM subscriptions s LEFT JOIN audience_ids a ON a.id = s.token_id AND NOT a.unusable
    WHERE s.topic = ANY(:topics) AND s.status <> '{SubscriptionStatus.UNSUBSCRIBED}'
    GROUP BY s.topic
)
SELECT p.topic,
       (SELECT count(*) FROM audience_ids WHERE NOT unusable) - coalesce(h.members_kept, 0)
           AS to_add,
       coalesce(h.members - h.members_kept + h.owed - h.owed_kept, 0) AS to_remove,
       (h.topic IS NOT NULL OR EXISTS (SELECT 1 FROM runs r WHERE r.topic = p.topic)) AS used,
       {_LAST_PUBLISHED_SQL} AS last_published
FROM unnest(CAST(:topics AS text[])) WITH ORDINALITY AS p(topic, slot)
LEFT JOIN held h ON h.topic = p.topic
ORDER BY p.slot
"""


def pool_costs(conn: Connection, topics: Sequence[str]) -> list[TopicCost]:
    """Each topic's cost against the staged audience (stage_audience), in the order given.

    Set-based: no member is read into Python, whatever the audience's size. Dead and
    forgotten audience tokens count as outside the audience, as the diff counts them."""
    rows = conn.execute(text(POOL_COSTS_SQL), {"topics": list(topics)}).all()
    return [TopicCost(str(r[0]), int(r[1]), int(r[2]), bool(r[3]), r[4]) for r in rows]


def last_publishes(conn: Connection, topics: Sequence[str]) -> dict[str, dt.datetime | None]:
    """When a message last went to each topic (None: never), as pool_costs reads it."""
    rows = conn.execute(
        text(
            f"SELECT p.topic, {_LAST_PUBLISHED_SQL} FROM unnest(CAST(:topics AS text[])) p(topic)"
        ),
        {"topics": list(topics)},
    ).all()
    return {str(topic): at for topic, at in rows}


def pending_counts(conn: Connection, topic: str) -> tuple[int, int]:
    """(owed subscriptions, owed removals) for a topic."""
    row = conn.execute(
        text(
            f"""
            SELECT count(*) FILTER (WHERE status = '{SubscriptionStatus.PENDING_SUBSCRIBE}'),
                   count(*) FILTER (WHERE status = '{SubscriptionStatus.PENDING_UNSUBSCRIBE}')
            FROM subscriptions WHERE topic = :topic AND status IN {PENDING_SQL}
            """
        ),
        {"topic": topic},
    ).one()
    return int(row[0]), int(row[1])


def pending_sample(
    conn: Connection, topic: str, status: SubscriptionStatus, limit: int = 10
) -> list[str]:
    return list(
        conn.scalars(
            text(
                "SELECT t.token FROM subscriptions s JOIN tokens t ON t.id = s.token_id "
                "WHERE s.topic = :topic AND s.status = :status ORDER BY s.token_id LIMIT :n"
            ),
            {"topic": topic, "status": status, "n": limit},
        )
    )


def psycopg_connection(conn: Connection) -> psycopg.Connection[Any]:
    """The driver's own connection under a SQLAlchemy one, for COPY."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


def db_now(conn: Connection) -> dt.datetime:
    now: dt.datetime = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    return now


CLAIM_BATCH_SQL = """
            WITH picked AS MATERIALIZED (
                SELECT s.token_id FROM subscriptions s
                WHERE s.topic = :topic AND s.status = :status
                  AND s.token_id > CAST(:after AS bigint)
                  AND (s.last_attempt_at IS NULL OR s.last_attempt_at < :since)
                ORDER BY s.token_id
                LIMIT :limit
                FOR UPDATE SKIP LOCKED
            )
            SELECT p.token_id, (SELECT t.token FROM tokens t WHERE t.id = p.token_id)
            FROM picked p
            ORDER BY p.token_id
            """


def claim_batch(
    conn: Connection,
    topic: str,
    status: SubscriptionStatus,
    not_since: dt.datetime,
    limit: int,
    after: int = 0,
) -> list[tuple[int, str]]:
    """Lock up to `limit` pending rows not yet attempted since `not_since`, with token ids
    above `after`.

    SKIP LOCKED lets several workers drain one topic without waiting on each other. The rows
    are picked in token order and limited before their tokens are read, each by its key, so a
    batch costs the same whether 1,000 or 1,000,000 rows are done or owed. `after` lets a
    drain start past the rows it already claimed this round: without it, every claim walks
    again over the rows done before it (they lie first in token order), and a drain costs the
    square of its batches. Reading the tokens one by one by their key keeps a claim from
    hashing the whole tokens table, which the planner otherwise picks for a batch of 1,000.
    """
    rows = conn.execute(
        text(CLAIM_BATCH_SQL),
        {"topic": topic, "status": status, "since": not_since, "limit": limit, "after": after},
    ).all()
    return [(int(r[0]), str(r[1])) for r in rows]


# A batch's answers in one statement (one round trip, the answers unpacked once): the
# subscription rows; a failure row per failed token (for report), and the earlier failures of
# the tokens that now succeeded resolved; the tokens FCM called dead marked. A token is in a
# batch once, so the failures inserted and those resolved are never the same row.
RECORD_OUTCOMES_SQL = f"""
WITH o AS MATERIALIZED (
    SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]),
                         CAST(:codes AS text[]), CAST(:reasons AS text[]),
                         CAST(:failed AS boolean[]), CAST(:invalid AS boolean[]))
        AS o(token_id, status, code, reason, failed, invalid)
),
answered AS (
    UPDATE subscriptions s
    SET status = o.status, attempts = s.attempts + 1, last_attempt_at = clock_timestamp(),
        last_code = o.code, last_reason = o.reason,
        run_id = coalesce(CAST(:run_id AS bigint), s.run_id), updated_at = now(),
        forgotten_from = CASE WHEN o.status = '{SubscriptionStatus.PENDING_UNSUBSCRIBE}'
                              THEN s.forgotten_from END
    FROM o
    WHERE s.topic = :topic AND s.token_id = o.token_id
),
failing AS (
    INSERT INTO token_failures (run_id, token_id, topic, op, code, reason)
    SELECT :run_id, o.token_id, :topic, :op, o.code, o.reason
    FROM o WHERE o.failed
    ON CONFLICT (run_id, token_id, topic, op) DO UPDATE
    SET code = excluded.code, reason = excluded.reason,
        attempts = token_failures.attempts + 1, last_seen = now(), resolved_at = NULL
),
resolved AS (
    UPDATE token_failures f SET resolved_at = now()
    FROM o
    WHERE NOT o.failed AND f.token_id = o.token_id AND f.topic = :topic
      AND f.op = :op AND f.resolved_at IS NULL
),
dead AS (
    -- dead_on: the run's date; a repair's, today (UTC).
    UPDATE tokens t SET invalid_at = now(), invalid_reason = o.code,
        dead_on = coalesce((SELECT run_date FROM runs WHERE id = :run_id),
                           (now() AT TIME ZONE 'UTC')::date)
    FROM o
    WHERE o.invalid AND t.id = o.token_id AND t.invalid_at IS NULL
    RETURNING t.id
)
SELECT id FROM dead ORDER BY id
"""


def record_outcomes(
    conn: Connection, topic: str, op: str, run_id: int | None, outcomes: Sequence[TokenOutcome]
) -> list[int]:
    """Write a batch's answers: subscription rows, failures for report, dead tokens.

    The rows are found by key. Left to itself the planner, costing every page as a disk
    read, hashes the whole subscription table to find the batch's 1,000 rows whenever the
    table holds fewer than about 150,000 (at 60,000 rows, 70-94 ms a statement instead of
    17-26), although the rows were just claimed by this transaction and are in memory: so
    sequential scans are off for this one statement.

    Returns the ids of the tokens this batch newly marked dead."""
    if not outcomes:
        return []
    params = {
        "ids": [o.token_id for o in outcomes],
        "statuses": [o.status for o in outcomes],
        "codes": [o.code for o in outcomes],
        "reasons": [o.reason for o in outcomes],
        "failed": [o.failed for o in outcomes],
        "invalid": [o.invalid for o in outcomes],
        "topic": topic,
        "op": op,
        "run_id": run_id,
    }
    with planner_setting(conn, "enable_seqscan", "off"):
        return [int(i) for i in conn.scalars(text(RECORD_OUTCOMES_SQL), params)]


# --- repairs ----------------------------------------------------------------------------------


def refresh_statistics(conn: Connection) -> None:
    """ANALYZE the queue after a bulk change (a repair queued work): the batch claims' plans
    depend on knowing how many rows are owed."""
    conn.execute(text(f"ANALYZE subscriptions {SUBSCRIPTION_STATS}"))


def topics_with_rows(conn: Connection) -> list[str]:
    return list(conn.scalars(text("SELECT DISTINCT topic FROM subscriptions ORDER BY topic")))


def stale_members(conn: Connection, topics: Sequence[str]) -> int:
    """Rows that still count as members but whose token is invalid or forgotten."""
    return int(
        conn.execute(
            text(
                f"""
            SELECT count(*) FROM subscriptions s JOIN tokens t ON t.id = s.token_id
            WHERE s.topic = ANY(:topics)
              AND s.status IN {MEMBER_SQL}
              AND (t.invalid_at IS NOT NULL OR t.forgotten_at IS NOT NULL)
            """
            ),
            {"topics": list(topics)},
        ).scalar_one()
    )


def queue_stale_removals(conn: Connection, topics: Sequence[str]) -> int:
    """Queue the removal of invalid or forgotten tokens from every topic given."""
    return conn.execute(
        text(
            f"""
            UPDATE subscriptions s
            SET status = '{SubscriptionStatus.PENDING_UNSUBSCRIBE}', attempts = 0,
                forgotten_from = NULL, updated_at = now()
            FROM tokens t
            WHERE t.id = s.token_id AND s.topic = ANY(:topics)
              AND s.status IN {MEMBER_SQL}
              AND (t.invalid_at IS NOT NULL OR t.forgotten_at IS NOT NULL)
            """
        ),
        {"topics": list(topics)},
    ).rowcount


def confirmed_counts(conn: Connection, topic: str) -> tuple[int, int]:
    """(confirmed members, confirmed removals) of a topic: what --full re-asserts."""
    row = conn.execute(
        text(
            f"""
            SELECT count(*) FILTER (WHERE status = '{SubscriptionStatus.SUBSCRIBED}'),
                   count(*) FILTER (WHERE status = '{SubscriptionStatus.UNSUBSCRIBED}')
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
    row = conn.execute(
        text(
            f"""
            WITH queued AS (
                UPDATE subscriptions
                SET status = CASE status
                    WHEN '{SubscriptionStatus.SUBSCRIBED}'
                    THEN '{SubscriptionStatus.PENDING_SUBSCRIBE}'
                    ELSE '{SubscriptionStatus.PENDING_UNSUBSCRIBE}' END,
                    attempts = 0, forgotten_from = NULL, updated_at = now()
                WHERE topic = :topic
                  AND status IN ('{SubscriptionStatus.SUBSCRIBED}',
                                 '{SubscriptionStatus.UNSUBSCRIBED}')
                RETURNING status
            )
            SELECT count(*) FILTER (WHERE status = '{SubscriptionStatus.PENDING_SUBSCRIBE}'),
                   count(*) FILTER (WHERE status = '{SubscriptionStatus.PENDING_UNSUBSCRIBE}')
            FROM queued
            """
        ),
        {"topic": topic},
    ).one()
    return int(row[0]), int(row[1])


def audit_page(
    conn: Connection,
    topics: Sequence[str],
    *,
    after: int,
    limit: int,
    only: Sequence[int] | None = None,
) -> list[tuple[int, str, dict[str, str]]]:
    """The next page of tokens known on these topics (token id above `after`, in id order),
    each with the table's status per topic. `only` restricts it to a sample of token ids.

    Pages, not one list: an audit of millions of tokens keeps one page in memory.
    """
    rows = conn.execute(
        text(
            """
            WITH chosen AS (
                SELECT DISTINCT s.token_id FROM subscriptions s
                WHERE s.topic = ANY(:topics) AND s.token_id > :after
                  AND (CAST(:only AS bigint[]) IS NULL OR s.token_id = ANY(:only))
                ORDER BY s.token_id LIMIT :limit
            )
            SELECT t.id, t.token, coalesce(jsonb_object_agg(s.topic, s.status)
                                           FILTER (WHERE s.topic = ANY(:topics)), '{}')
            FROM chosen c JOIN tokens t ON t.id = c.token_id
            LEFT JOIN subscriptions s ON s.token_id = c.token_id
            GROUP BY t.id, t.token ORDER BY t.id
            """
        ),
        {"topics": list(topics), "after": after, "limit": limit, "only": only},
    ).all()
    return [(int(i), str(token), dict(states)) for i, token, states in rows]


def audit_sample(conn: Connection, topics: Sequence[str], size: int) -> list[int]:
    """A random sample of the token ids known on these topics, in id order."""
    ids = conn.scalars(
        text(
            """
            SELECT token_id FROM (
                SELECT DISTINCT token_id FROM subscriptions WHERE topic = ANY(:topics)
            ) known ORDER BY random() LIMIT :size
            """
        ),
        {"topics": list(topics), "size": size},
    )
    return sorted(int(i) for i in ids)


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
            SET status = excluded.status, attempts = 0, forgotten_from = NULL, updated_at = now()
            """
        ),
        {
            "tokens": [h[0] for h in heals],
            "topics": [h[1] for h in heals],
            "statuses": [h[2] for h in heals],
        },
    )


def _copy_tokens(conn: Connection, table: str, tokens: Iterable[str]) -> None:
    """COPY tokens into a transaction-scoped temp table of one `token` column."""
    conn.execute(text(f"CREATE TEMP TABLE {table} (token text NOT NULL) ON COMMIT DROP"))
    raw = psycopg_connection(conn)
    with raw.cursor() as cur, cur.copy(f"COPY {table} (token) FROM STDIN") as copy:
        for token in tokens:
            copy.write_row((token,))


def forget_tokens(conn: Connection, tokens: Iterable[str]) -> tuple[int, int]:
    """Mark tokens gone (also ones never seen, so later audiences skip them).

    Returns (tokens marked, subscription rows now owed a removal). Each queued removal
    keeps the status it replaced (`forgotten_from`), so an undo can lift it while owed.
    """
    _copy_tokens(conn, "forget_in", tokens)
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
            f"""
            UPDATE subscriptions s
            SET status = '{SubscriptionStatus.PENDING_UNSUBSCRIBE}', forgotten_from = s.status,
                attempts = 0, updated_at = now()
            FROM tokens t
            WHERE t.id = s.token_id AND t.forgotten_at IS NOT NULL
              AND t.token_key IN (SELECT md5(token)::uuid FROM forget_in)
              AND s.status IN {MEMBER_SQL}
            """
        )
    ).rowcount
    return marked, queued


def unforget_tokens(conn: Connection, tokens: Iterable[str]) -> tuple[int, int]:
    """Take tokens off the suppression list (undo a forget), and lift the removals the
    forget queued that are still owed; returns (tokens taken off the list, removals lifted).

    A lifted removal goes back to what the forget found, if no removal was tried since
    (FCM still holds what it held); after a try, whose answer proved nothing, to an owed
    subscription (re-asserted, idempotent). A removal already confirmed stays done: the
    next audience that holds the token subscribes it again, as for any new member."""
    _copy_tokens(conn, "unforget_in", tokens)
    lifted = conn.execute(
        text(
            f"""
            UPDATE subscriptions s
            SET status = CASE WHEN s.attempts = 0 THEN s.forgotten_from
                              ELSE '{SubscriptionStatus.PENDING_SUBSCRIBE}' END,
                forgotten_from = NULL, updated_at = now()
            FROM tokens t
            WHERE t.id = s.token_id AND t.forgotten_at IS NOT NULL
              AND t.token_key IN (SELECT md5(token)::uuid FROM unforget_in)
              AND s.status = '{SubscriptionStatus.PENDING_UNSUBSCRIBE}'
              AND s.forgotten_from IS NOT NULL
            """
        )
    ).rowcount
    restored = conn.execute(
        text(
            """
            UPDATE tokens SET forgotten_at = NULL
            WHERE token_key IN (SELECT md5(token)::uuid FROM unforget_in)
              AND forgotten_at IS NOT NULL
            """
        )
    ).rowcount
    return restored, lifted


def topics_owing(conn: Connection) -> list[str]:
    return list(
        conn.scalars(
            text(
                f"SELECT DISTINCT topic FROM subscriptions WHERE status IN {PENDING_SQL} "
                "ORDER BY topic"
            )
        )
    )
