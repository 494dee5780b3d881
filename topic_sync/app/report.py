"""The morning-after view: which tokens failed and why, and whether each day went out.

Two reads of the database, each one set-based query, and three renderings of each.

Failed tokens come from `token_failures` (one row per run, token, topic and operation),
joined to `tokens` for the token text and to `runs` (LEFT JOIN: a failure recorded by a
repair outside a daily run has no run, so no date and no prefix). By default only
unresolved failures are listed: a failure is resolved once a later attempt succeeded.

Run summaries come from `runs`, one row per prefix and date; "latest" means the newest
`run_date`, then the newest `started_at`. A day counts as published only when its publish
was confirmed (`publish_state = 'sent'`).

Tokens are device identifiers: every rendering shortens them (`shorten`) unless the caller
asks for them whole (`full_tokens=True`).

Formats: `table` (aligned columns for a terminal), `csv` (a header row whose names are the
JSON keys below, then one row per item) and `json`. Renderings carry no trailing newline.

JSON contract (version 1; a new key may be added within a version, nothing is renamed,
removed or retyped without raising `version`). Timestamps are ISO 8601 UTC to the second
with a "Z" (`2026-11-22T06:00:12Z`); dates are `YYYY-MM-DD`.

Failures::

    {"version": 1, "kind": "failures", "failures": [
      {"token": str,              # shortened unless full_tokens
       "op": "subscribe" | "unsubscribe",
       "code": str,               # a code of the error table
       "reason": str,             # FCM's raw reason
       "attempts": int,
       "first_seen": timestamp, "last_seen": timestamp,
       "run_id": int | null,      # null: recorded by a repair outside a daily run
       "date": date | null, "prefix": str | null,   # the run's; null without a run
       "topic": str,
       "resolved": bool}]}

Runs::

    {"version": 1, "kind": "runs", "runs": [
      {"run_id": int, "prefix": str, "date": date, "topic": str,
       "status": "syncing" | "withheld" | "deadline" | "interrupted" | "publishing"
                 | "published" | "failed" | "fenced" | "guarded",
       "published": bool,         # the publish was confirmed by FCM
       "why": str,                # the run's note, or a sentence derived from its status
       "message_id": str | null,
       "audience": int, "added": int, "removed": int,
       "failed": {code: int},     # unresolved failures per error code
       "retries": int, "attempts": int,
       "wait_seconds": float,
       "duration_seconds": float | null,   # null while the run has not finished
       "started_at": timestamp}]}

Dead tokens (`report --dead`)::

    {"version": 1, "kind": "dead", "dead": [
      {"token": str,              # shortened unless full_tokens
       "reason": str,             # the error code that marked it dead
       "marked_at": timestamp,    # when it was (last) marked dead
       "dead_on": date | null,    # the date of the run that marked it (a repair's: its day)
       "retried_on": date | null}]}   # the audience date it was last tried once more on

`report` with no filter (the overview) answers "which tokens failed and why": per campaign
(prefix), its latest run followed by that run's unresolved failed tokens grouped by code and
operation. Its JSON is the runs document above with one key added (allowed within version
1), so readers of the runs document keep working::

    {"version": 1, "kind": "runs", "runs": [...as above...],
     "campaigns": [
      {"prefix": str,
       "run": {...a run record as above...},     # the campaign's latest run
       "failed_tokens": int,                     # its unresolved failed tokens, all of them
       "failures": [{"code": str, "op": "subscribe" | "unsubscribe",
                     "count": int,               # tokens in this group, all of them
                     "tokens": [str]}]}]}        # the most recently seen first, at most the
                                                 # limit; shortened unless full_tokens
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Engine

from topic_sync import store
from topic_sync.dates import format_duration
from topic_sync.engine.choice import TopicChoice, explain
from topic_sync.engine.run import RunOutcome
from topic_sync.engine.run import RunResult as RunResult  # the run's summary, typed
from topic_sync.errors import BadInput, ExitCode
from topic_sync.fcm.error_table import all_codes
from topic_sync.pool import is_pool_topic
from topic_sync.redact import shorten
from topic_sync.states import Op, RunStatus

JSON_VERSION = 1
FAILURES_KIND = "failures"
RUNS_KIND = "runs"
DEAD_KIND = "dead"
DEAD_FIELDS = ("token", "reason", "marked_at", "dead_on", "retried_on")
FAILURE_FIELDS = (
    "token",
    "op",
    "code",
    "reason",
    "attempts",
    "first_seen",
    "last_seen",
    "run_id",
    "date",
    "prefix",
    "topic",
    "resolved",
)
RUN_FIELDS = (
    "run_id",
    "campaign",
    "prefix",
    "date",
    "topic",
    "status",
    "published",
    "why",
    "message_id",
    "audience",
    "added",
    "removed",
    "failed",
    "retries",
    "attempts",
    "wait_seconds",
    "duration_seconds",
    "started_at",
    "newly_dead",
    "tries",
)
# Each attempt at a day's run, as it ended (JSON's `history`; the table's lines under a day).
ATTEMPT_FIELDS = (
    "attempt",
    "topic",
    "status",
    "why",
    "audience",
    "to_add",
    "to_remove",
    "added",
    "removed",
    "newly_dead",
    "failed",
    "retries",
    "attempts",
    "wait_seconds",
    "duration_seconds",
    "started_at",
)
FORMATS = ("table", "csv", "json")
DEFAULT_RUN_LIMIT = 10
DEFAULT_FAILURE_LIMIT = 1000  # a day with a million failures must not print a million lines
DEFAULT_GROUP_TOKENS = 10  # tokens the overview names per (code, op) group
CAMPAIGNS_KEY = "campaigns"
CAMPAIGN_FIELDS = ("campaign", "prefix", "run", "failed_tokens", "failures")
GROUP_FIELDS = ("code", "op", "count", "tokens")


@dataclass(frozen=True)
class FailedToken:
    token: str
    op: str
    code: str
    reason: str
    attempts: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    run_id: int | None
    run_date: dt.date | None  # None: recorded by a repair outside a daily run
    prefix: str | None  # None likewise
    topic: str
    resolved: bool


@dataclass(frozen=True)
class AttemptSummary:
    """One attempt at a day's run with its own figures (a rerun keeps the earlier ones)."""

    attempt: int
    topic: str
    status: str
    why: str
    audience: int
    to_add: int
    to_remove: int
    added: int
    removed: int
    newly_dead: int
    failed: dict[str, int]  # unresolved when the attempt ended
    retries: int
    attempts: int
    wait_seconds: float
    duration_seconds: float | None
    started_at: dt.datetime


@dataclass(frozen=True)
class RunSummary:
    """A campaign's day: its totals over every attempt, the current attempt's plan and
    status, and the publish record."""

    run_id: int
    prefix: str
    date: dt.date
    topic: str
    status: str
    audience: int
    added: int
    removed: int
    failed: dict[str, int]
    retries: int
    attempts: int
    wait_seconds: float
    duration_seconds: float | None  # None while the run has not finished
    published: bool
    message_id: str | None
    why: str
    started_at: dt.datetime
    newly_dead: int = 0  # tokens the run found dead
    suppressed: int = 0  # audience tokens skipped as forgotten
    campaign: str = ""  # the campaign's name (its prefix may have changed since)
    tries: int = 1  # attempts at the day's run
    history: list[AttemptSummary] = field(default_factory=list)  # every attempt, in order
    intent_at: dt.datetime | None = None  # an unconfirmed publish's intent, if any
    unrecorded: str | None = None  # a message id FCM accepted that the database lacks


@dataclass(frozen=True)
class DeadToken:
    token: str
    reason: str
    marked_at: dt.datetime
    dead_on: dt.date | None
    retried_on: dt.date | None


@dataclass(frozen=True)
class FailureGroup:
    """A run's unresolved failures of one code and operation."""

    code: str
    op: str
    count: int  # all of them
    tokens: list[str]  # the most recently seen first, at most the overview's limit


@dataclass(frozen=True)
class CampaignOverview:
    """A campaign's latest run and its unresolved failed tokens, grouped."""

    run: RunSummary
    groups: list[FailureGroup]

    @property
    def failed_tokens(self) -> int:
        return sum(group.count for group in self.groups)


@dataclass(frozen=True)
class FailureFilter:
    """Which failures to list; every given field narrows the list.

    `prefix` matches the run's prefix, and also failures recorded outside a run on one of
    the prefix's pool topics (`PREFIX-<slot>`). `date` and `run_id` match runs only.
    """

    date: dt.date | None = None
    run_id: int | None = None
    code: str | None = None
    op: str | None = None
    prefix: str | None = None
    include_resolved: bool = False
    limit: int | None = None

    def validate(self) -> None:
        if self.op is not None and self.op not in list(Op):
            raise BadInput(f"unknown operation {self.op!r}; valid: {', '.join(Op)}")
        codes = all_codes()
        if self.code is not None and self.code not in codes:
            raise BadInput(f"unknown error code {self.code!r}; valid: {', '.join(codes)}")
        if self.limit is not None and self.limit < 1:
            raise BadInput(f"limit must be at least 1, not {self.limit}")


# --- queries ----------------------------------------------------------------------------------


def _campaigns(conn: Any, called: str | None) -> list[int] | None:
    """The campaigns a --topic-prefix (or a configuration's campaign) selects; None: all."""
    return None if called is None else store.campaigns_called(conn, called)


def failed_tokens(engine: Engine, flt: FailureFilter | None = None) -> list[FailedToken]:
    """Failures matching the filter, newest `last_seen` first (unresolved only by default)."""
    flt = flt or FailureFilter()
    flt.validate()
    filters: dict[str, object] = {
        name: getattr(flt, name)
        for name in ("date", "run_id", "code", "op")
        if getattr(flt, name) is not None
    }
    with engine.connect() as conn:
        if flt.prefix is not None:
            # A failure a repair recorded has no run: it belongs to the campaign when its
            # topic is one of the prefix's pool topics (the pool rule lives in topic_sync.pool).
            orphans = store.topics_of_failures_without_run(conn)
            filters["campaigns"] = _campaigns(conn, flt.prefix)
            filters["pool_topics"] = [t for t in orphans if is_pool_topic(flt.prefix, t)]
        rows = store.failure_rows(
            conn, filters, include_resolved=flt.include_resolved, limit=flt.limit
        )
    return [
        FailedToken(
            token=row.token,
            op=row.op,
            code=row.code,
            reason=row.reason,
            attempts=row.attempts,
            first_seen=_utc(row.first_seen),
            last_seen=_utc(row.last_seen),
            run_id=row.run_id,
            run_date=row.run_date,
            prefix=row.prefix,
            topic=row.topic,
            resolved=row.resolved,
        )
        for row in rows
    ]


def run_summaries(
    engine: Engine, *, prefix: str | None = None, limit: int | None = DEFAULT_RUN_LIMIT
) -> list[RunSummary]:
    """The most recent days first (by date, then start time), of the campaign `prefix`
    selects (see store.campaigns_called) or of all; `limit=None` for all."""
    if limit is not None and limit < 1:
        raise BadInput(f"limit must be at least 1, not {limit}")
    with engine.connect() as conn:
        rows = store.run_summary_rows(conn, campaigns=_campaigns(conn, prefix), limit=limit)
        return _with_history(conn, [_summary(row) for row in rows])


def latest_runs(engine: Engine, prefix: str | None = None) -> list[RunSummary]:
    """The latest day of every campaign (or of the one `prefix` selects), by campaign name."""
    with engine.connect() as conn:
        rows = store.latest_run_rows(conn, campaigns=_campaigns(conn, prefix))
        return _with_history(conn, [_summary(row) for row in rows])


def _with_history(conn: Any, runs: list[RunSummary]) -> list[RunSummary]:
    """The runs, each with every attempt at it."""
    history: dict[int, list[AttemptSummary]] = {run.run_id: [] for run in runs}
    for row in store.attempt_rows(conn, list(history)):
        history[row.run_id].append(
            AttemptSummary(
                attempt=row.attempt, to_add=row.to_add, to_remove=row.to_remove, **_figures(row)
            )
        )
    return [replace(run, history=history[run.run_id]) for run in runs]


def overview(
    engine: Engine, *, prefix: str | None = None, per_group: int | None = DEFAULT_GROUP_TOKENS
) -> list[CampaignOverview]:
    """Per prefix (or the given one), its latest run and that run's unresolved failures by
    code and operation, naming at most `per_group` tokens per group (None: all)."""
    if per_group is not None and per_group < 1:
        raise BadInput(f"limit must be at least 1, not {per_group}")
    latest = latest_runs(engine, prefix)
    with engine.connect() as conn:
        rows = store.failure_groups(conn, [run.run_id for run in latest], per_group)
    groups: dict[int, dict[tuple[str, str], FailureGroup]] = {run.run_id: {} for run in latest}
    for row in rows:
        key = (row.code, row.op)
        group = groups[row.run_id].get(key)
        if group is None:
            group = groups[row.run_id][key] = FailureGroup(row.code, row.op, int(row.n), [])
        group.tokens.append(row.token)
    return [CampaignOverview(run, list(groups[run.run_id].values())) for run in latest]


def dead_tokens(engine: Engine, limit: int | None = DEFAULT_FAILURE_LIMIT) -> list[DeadToken]:
    """Tokens marked dead (never sent to again), the most recently marked first."""
    if limit is not None and limit < 1:
        raise BadInput(f"limit must be at least 1, not {limit}")
    with engine.connect() as conn:
        rows = store.dead_token_rows(conn, limit)
    return [
        DeadToken(
            row.token, row.invalid_reason or "", _utc(row.invalid_at), row.dead_on, row.retried_on
        )
        for row in rows
    ]


def status_exit_code_of(latest: Sequence[RunSummary]) -> ExitCode:
    """OK when the latest run of every campaign (or of the one selected) was published;
    WITHHELD when one was not (withheld, past its deadline, failed or still running);
    FAILED when there is no run at all, so monitoring notices a job that never ran. A publish
    FCM accepted that only this host's evidence file records counts as published: it went
    out (see engine.evidence)."""
    if not latest:
        return ExitCode.FAILED
    if all(run.published or run.unrecorded for run in latest):
        return ExitCode.OK
    return ExitCode.WITHHELD


def with_evidence(latest: Sequence[RunSummary], found: Iterable[Any]) -> list[RunSummary]:
    """The runs, each unconfirmed publish that an evidence file proves marked with its
    message id (evidence of that very intent: the same run and intent time stamp)."""
    proofs = {(e.run_id, e.intent_time): e.message_id for e in found}
    return [
        replace(run, unrecorded=proofs.get((run.run_id, run.intent_at)))
        if not run.published and run.intent_at is not None
        else run
        for run in latest
    ]


def _figures(row: Any) -> dict[str, Any]:
    """What a day's run and one attempt at it both say: status, why, counts, times."""
    return {
        "topic": row.topic,
        "status": row.status,
        "why": (row.note or "").strip() or RunStatus(row.status).why,
        "audience": row.audience_size,
        "added": row.added,
        "removed": row.removed,
        "newly_dead": row.newly_dead,
        "failed": {code: int(n) for code, n in sorted((row.failed or {}).items())},
        "retries": row.retries,
        "attempts": row.attempts,
        "wait_seconds": float(row.wait_seconds),
        "duration_seconds": _seconds(row.duration),
        "started_at": _utc(row.started_at),
    }


def _summary(row: Any) -> RunSummary:
    return RunSummary(
        run_id=row.id,
        prefix=row.prefix,
        date=row.run_date,
        published=bool(row.published),
        message_id=row.message_id,
        suppressed=row.suppressed,
        **_figures(row),
        campaign=row.campaign,
        tries=row.tries,
        intent_at=row.publish_intent_at if row.publish_state == "intent" else None,
    )


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


# --- rendering --------------------------------------------------------------------------------


def render_failures(rows: Sequence[FailedToken], fmt: str, *, full_tokens: bool = False) -> str:
    _check_format(fmt)

    def token(row: FailedToken) -> str:
        return row.token if full_tokens else shorten(row.token)

    if fmt == "json":
        items = [_failure_record(row, token(row)) for row in rows]
        return _json({"version": JSON_VERSION, "kind": FAILURES_KIND, FAILURES_KIND: items})
    if fmt == "csv":
        return _csv(FAILURE_FIELDS, (_failure_record(row, token(row)) for row in rows))
    if not rows:
        return "no failed tokens"
    headers = ("LAST SEEN", "DATE", "RUN", "TOPIC", "OP", "CODE", "TRIES", "RESOLVED", "TOKEN")
    body = [
        (
            _minutes(row.last_seen),
            _or_dash(row.run_date),
            _or_dash(row.run_id),
            row.topic,
            row.op,
            row.code,
            str(row.attempts),
            "yes" if row.resolved else "no",
            token(row),
            row.reason,
        )
        for row in rows
    ]
    return _table((*headers, "REASON"), body, right={"RUN", "TRIES"})


def render_runs(rows: Sequence[RunSummary], fmt: str) -> str:
    _check_format(fmt)
    if fmt == "json":
        items = [run_record(row) for row in rows]
        return _json({"version": JSON_VERSION, "kind": RUNS_KIND, RUNS_KIND: items})
    if fmt == "csv":
        records = ({**_flat(run_record(row)), "failed": _per_code(row.failed)} for row in rows)
        return _csv(RUN_FIELDS, records)
    if not rows:
        return "no runs"
    headers = (
        "DATE",
        "PREFIX",
        "TOPIC",
        "STATUS",
        "PUBLISHED",
        "AUDIENCE",
        "ADDED",
        "REMOVED",
        "FAILED",
        "RETRIES",
        "WAITED",
        "TOOK",
        "STARTED",
        "WHY",
    )
    body = []
    for row in rows:
        body.append(
            (
                row.date.isoformat(),
                row.prefix,
                row.topic or "-",
                row.status,
                "yes" if row.published else "no",
                str(row.audience),
                str(row.added),
                str(row.removed),
                _per_code(row.failed) or "-",
                str(row.retries),
                duration_text(row.wait_seconds),
                duration_text(row.duration_seconds),
                _minutes(row.started_at),
                row.why if row.tries == 1 else f"{row.why} (totals of {row.tries} attempts)",
            )
        )
        if row.tries > 1:  # each attempt as it ended, beneath the day's totals
            body += [
                (
                    f"  #{a.attempt}",
                    "",
                    a.topic,
                    a.status,
                    "",
                    str(a.audience),
                    str(a.added),
                    str(a.removed),
                    _per_code(a.failed) or "-",
                    str(a.retries),
                    duration_text(a.wait_seconds),
                    duration_text(a.duration_seconds),
                    _minutes(a.started_at),
                    a.why,
                )
                for a in row.history
            ]
    numeric = {"AUDIENCE", "ADDED", "REMOVED", "RETRIES", "WAITED", "TOOK"}
    return _table(headers, body, right=numeric)


def render_overview(
    campaigns: Sequence[CampaignOverview],
    recent: Sequence[RunSummary],
    fmt: str,
    *,
    full_tokens: bool = False,
) -> str:
    """`report` with no filter: per campaign, the latest run and its unresolved failures.

    JSON is the runs document of `recent` plus the `campaigns` key; CSV, being flat, is the
    runs CSV of `recent`; the table is for people.
    """
    _check_format(fmt)

    def token(value: str) -> str:
        return value if full_tokens else shorten(value)

    if fmt == "csv":
        return render_runs(recent, fmt)
    if fmt == "json":
        document = {
            "version": JSON_VERSION,
            "kind": RUNS_KIND,
            RUNS_KIND: [run_record(row) for row in recent],
            CAMPAIGNS_KEY: [
                {
                    "campaign": item.run.campaign,
                    "prefix": item.run.prefix,
                    "run": run_record(item.run),
                    "failed_tokens": item.failed_tokens,
                    "failures": [
                        {
                            "code": group.code,
                            "op": group.op,
                            "count": group.count,
                            "tokens": [token(t) for t in group.tokens],
                        }
                        for group in item.groups
                    ],
                }
                for item in campaigns
            ],
        }
        return _json(document)
    if not campaigns:
        return "no runs"
    blocks = []
    for item in campaigns:
        run = item.run
        state = "published" if run.published else f"{run.status.upper()}: {run.why}"
        tries = f" (totals of {run.tries} attempts)" if run.tries > 1 else ""
        lines = [
            f"{_campaign_label(run)}  {run.date.isoformat()}  {run.topic or '-'}  {state}",
            f"  run {run.run_id}{tries}: audience {run.audience}, added {run.added}, "
            f"removed {run.removed}, newly dead {run.newly_dead}, suppressed "
            f"{run.suppressed}, retries {run.retries}, waited "
            f"{duration_text(run.wait_seconds)}, took {duration_text(run.duration_seconds)}",
        ]
        if run.tries > 1:
            lines += [f"    {_attempt_line(a)}" for a in run.history]
        if not item.groups:
            lines.append("  no unresolved failed tokens")
        else:
            lines.append(f"  {item.failed_tokens} failed tokens not resolved (code, op, count):")
            width = max(len(g.code) for g in item.groups)
            for group in item.groups:
                lines.append(f"    {group.code.ljust(width)}  {group.op.ljust(11)}  {group.count}")
                lines += [f"      {_printable(token(t))}" for t in group.tokens]
                hidden = group.count - len(group.tokens)
                if hidden > 0:
                    lines.append(
                        f"      … {hidden} more: topic-sync report --run {run.run_id} "
                        f"--code {group.code} --op {group.op}"
                    )
        blocks.append("\n".join(line.rstrip() for line in lines))
    return "\n\n".join(blocks)


def render_dead(rows: Sequence[DeadToken], fmt: str, *, full_tokens: bool = False) -> str:
    _check_format(fmt)

    def record(row: DeadToken) -> dict[str, object]:
        return {
            "token": row.token if full_tokens else shorten(row.token),
            "reason": row.reason,
            "marked_at": _timestamp(row.marked_at),
            "dead_on": None if row.dead_on is None else row.dead_on.isoformat(),
            "retried_on": None if row.retried_on is None else row.retried_on.isoformat(),
        }

    if fmt == "json":
        return _json(
            {"version": JSON_VERSION, "kind": DEAD_KIND, DEAD_KIND: [record(r) for r in rows]}
        )
    if fmt == "csv":
        return _csv(DEAD_FIELDS, (record(row) for row in rows))
    if not rows:
        return "no dead tokens"
    headers = ("MARKED", "DEAD ON", "RETRIED ON", "REASON", "TOKEN")
    body = [
        (
            _minutes(row.marked_at),
            _or_dash(row.dead_on),
            _or_dash(row.retried_on),
            row.reason,
            str(record(row)["token"]),
        )
        for row in rows
    ]
    return _table(headers, body, right=set())


def render_status(latest: Sequence[RunSummary]) -> str:
    """One line per campaign for its latest day (`latest_runs`, which chose them): published
    with the day's totals, or why not (a publish FCM accepted that only this host's evidence
    file records says so)."""
    if not latest:
        return "no runs"
    body = []
    for run in latest:
        if run.published or run.unrecorded:
            state = "published" if run.published else "PUBLISHED, NOT RECORDED"
            detail = (
                f"added {run.added} removed {run.removed} newly dead {run.newly_dead} "
                f"failed {sum(run.failed.values())}"
            )
            if run.failed:
                detail += f" ({_per_code(run.failed)})"
            if run.tries > 1:
                detail += f"; {run.tries} attempts"
            if run.unrecorded:
                detail += (
                    f"; FCM accepted message {run.unrecorded}, kept in this host's evidence "
                    "file: the next live run of the campaign here records it. Do not resend"
                )
        else:
            state, detail = run.status.upper(), run.why
        topic = run.topic or "-"  # a day whose audience never came chose none
        body.append((_campaign_label(run), run.date.isoformat(), topic, state, detail))
    return _table(None, body, right=set())


def _campaign_label(run: RunSummary) -> str:
    """The campaign's name, with the prefix its day used when that differs."""
    return run.campaign if run.campaign == run.prefix else f"{run.campaign} ({run.prefix})"


def _attempt_line(a: AttemptSummary) -> str:
    return (
        f"#{a.attempt} {a.status}: audience {a.audience}, added {a.added}, removed "
        f"{a.removed}, newly dead {a.newly_dead}, retries {a.retries}, took "
        f"{duration_text(a.duration_seconds)}; {a.why}"
    )


def _failure_record(row: FailedToken, token: str) -> dict[str, object]:
    return {
        "token": token,
        "op": row.op,
        "code": row.code,
        "reason": row.reason,
        "attempts": row.attempts,
        "first_seen": _timestamp(row.first_seen),
        "last_seen": _timestamp(row.last_seen),
        "run_id": row.run_id,
        "date": None if row.run_date is None else row.run_date.isoformat(),
        "prefix": row.prefix,
        "topic": row.topic,
        "resolved": row.resolved,
    }


def run_record(row: RunSummary) -> dict[str, object]:
    """A day's run as JSON: the RUN_FIELDS, then `history` (each attempt, ATTEMPT_FIELDS)."""
    return {
        "run_id": row.run_id,
        "campaign": row.campaign,
        "prefix": row.prefix,
        "date": row.date.isoformat(),
        "topic": row.topic,
        "status": row.status,
        "published": row.published,
        "why": row.why,
        "message_id": row.message_id,
        "audience": row.audience,
        "added": row.added,
        "removed": row.removed,
        "failed": dict(row.failed),
        "retries": row.retries,
        "attempts": row.attempts,
        "wait_seconds": row.wait_seconds,
        "duration_seconds": row.duration_seconds,
        "started_at": _timestamp(row.started_at),
        "newly_dead": row.newly_dead,
        "tries": row.tries,
        "history": [attempt_record(a) for a in row.history],
    }


def attempt_record(a: AttemptSummary) -> dict[str, object]:
    return {
        "attempt": a.attempt,
        "topic": a.topic,
        "status": a.status,
        "why": a.why,
        "audience": a.audience,
        "to_add": a.to_add,
        "to_remove": a.to_remove,
        "added": a.added,
        "removed": a.removed,
        "newly_dead": a.newly_dead,
        "failed": dict(a.failed),
        "retries": a.retries,
        "attempts": a.attempts,
        "wait_seconds": a.wait_seconds,
        "duration_seconds": a.duration_seconds,
        "started_at": _timestamp(a.started_at),
    }


def _flat(record: dict[str, object]) -> dict[str, object]:
    """A run record for CSV: the day's totals, without the nested history."""
    return {key: record[key] for key in RUN_FIELDS}


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise BadInput(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document)  # ASCII only: safe on any terminal or pipe


def _csv(fields: Sequence[str], records: Iterable[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: _csv_cell(v) for k, v in record.items()})
    return out.getvalue().rstrip("\n")


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _table(headers: Sequence[str] | None, body: Sequence[Sequence[str]], *, right: set[str]) -> str:
    """Aligned columns; the last one is not padded (no trailing blanks)."""
    lines = [tuple(headers)] if headers else []
    lines += [tuple(_printable(cell) for cell in row) for row in body]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    aligned: list[Callable[[str, int], str]] = [
        str.rjust if headers and headers[i] in right else str.ljust for i in range(len(widths))
    ]
    out = []
    for line in lines:
        cells = [aligned[i](cell, widths[i]) for i, cell in enumerate(line[:-1])]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    return "\n".join(out)


def _printable(value: str) -> str:
    """FCM's reasons and run notes are shown on a terminal: escape control characters."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def _per_code(failed: dict[str, int]) -> str:
    return ", ".join(f"{code}={n}" for code, n in sorted(failed.items()))


def _timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _minutes(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def _or_dash(value: object) -> str:
    if value is None:
        return "-"
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def duration_text(seconds: float | None) -> str:
    """A duration as it is typed (3m7s, 2h5m), - for none."""
    return "-" if seconds is None else format_duration(seconds)


# --- a run's summary, for people -------------------------------------------------------------


def describe_run(result: RunResult) -> str:
    """What a run did, for people: the plan, what was done, what failed, the message."""
    plan, counts = result.plan, result.counts
    lines = [f"{result.day.isoformat()} {result.prefix} -> {result.topic}: {result.status}"]
    lines += describe_choice(result.choice, every_topic=result.status is RunOutcome.DRY_RUN)
    if plan is not None:
        lines.append(
            f"  audience {plan.audience_size} tokens ({plan.duplicates} duplicates merged, "
            f"{plan.skipped_dead} known-dead and {plan.suppressed} "
            f"suppressed (forgotten) skipped, {plan.retried_dead} dead tried once more)"
        )
        lines.append(f"  plan: {plan.to_remove} to remove, {plan.to_add} to add")
    if result.status is not RunOutcome.DRY_RUN:
        lines.append(f"  done: {counts.removed} removed, {counts.added} added")
    if counts.newly_dead:
        lines.append(f"  newly dead: {counts.newly_dead} (see 'topic-sync report --dead')")
    if result.failed:
        failed = ", ".join(f"{code} {n}" for code, n in sorted(result.failed.items()))
        lines.append(f"  failed tokens: {failed}")
    if result.message_id:
        lines.append(f"  message: {result.message_id}")
    if result.note:
        lines.append(f"  {result.note}")
    return "\n".join(lines)


def describe_choice(choice: TopicChoice | None, *, every_topic: bool) -> list[str]:
    """Why the run has its topic; with `every_topic`, each pool topic's operations and
    whether it may change (a dry run shows them)."""
    if choice is None:
        return []
    lines = [f"  topic {choice.topic}: {explain(choice)}"]
    if not every_topic:
        return lines
    width = max((len(c.topic) for c in choice.costs), default=0)
    for c in choice.costs:
        mark = "*" if c.topic == choice.topic else " "
        state = "resting" if choice.resting(c) else "NOT resting (within the rest period)"
        if c.last_published:
            state += f", last published {c.last_published.isoformat(timespec='seconds')}"
        elif not c.used:
            state += ", never used"
        lines.append(
            f"  {mark} {c.topic:<{width}}  {c.operations:>9,} operations "
            f"(+{c.to_add:,} -{c.to_remove:,}), {state}"
        )
    return lines
