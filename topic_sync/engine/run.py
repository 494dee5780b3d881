"""The sync engine: make one topic's membership equal to the day's audience, then
publish the day's message to it once.

Order of a live run, and why:
1. Validate the message (locally and with FCM's validate_only) before anything
   changes, so a bad message never leaves a synced topic without its push. FCM's
   answer is awaited while the plan is made: the plan commits only once it came.
2. Plan in one transaction: COPY the audience (checked whole: every line, its
   end, its producer's manifest), diff in SQL, apply the audience guard (the day's
   audience against the campaign's previous one). A bad line or a refused plan
   rolls back: nothing changes.
3. Removals first, then additions, each batch in its own transaction that
   commits only after FCM answered; a worker with no removal left to claim starts
   the additions while the last removals are answered. Retryable tokens are
   re-batched per the retry policy, once both have had their first round (a
   refusal's wait does not hold the additions back); what still fails stays recorded.
4. Publish only when no removal from the topic is unconfirmed, and record the
   intent before sending so a crash can never lead to a second send. With a publish
   window (publish_at/publish_by), the synced day waits for publish_at first, and a day
   that cannot publish by publish_by is not sent (engine.publish).

Two proofs guard every irreversible step. The topic's fence (store.take_fence):
the plan takes a new epoch, and every batch and the publish check it in their own
transaction, so a run that lost its lock and whose topic someone else planned
since stops instead of publishing a stale plan. And only an answer about a token
settles it (error_table.rule_for); a flood of "dead" answers trips the dead-token
guard, which treats them as a systemic fault rather than a mass uninstall.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from sqlalchemy import Connection, Engine

from topic_sync import store
from topic_sync.dates import format_duration
from topic_sync.engine import campaign
from topic_sync.engine.campaign import CampaignSpec
from topic_sync.engine.choice import TopicChoice, choose, explain
from topic_sync.engine.drain import DeadGuard, Work, process_owner, take_fence
from topic_sync.engine.estimate import SyncEstimate, estimate, late_warning
from topic_sync.engine.publish import (
    PublishPlan,
    Receipt,
    Sent,
    Step,
    Window,
    publish_day,
    record_evidence,
    send_message,
    still_synced,
    window_of,
)
from topic_sync.engine.retry import RetryPolicy
from topic_sync.engine.target import check_target
from topic_sync.engine.types import Deps, Phases, SyncCounts
from topic_sync.errors import (
    AudienceNeverCame,
    BadInput,
    CampaignMismatch,
    DeadlineReached,
    DeadTokenGuard,
    ExitCode,
    Fenced,
    InputFileError,
    Interrupted,
    Locked,
    MissedWindow,
    NotSynced,
    PublishUnrecorded,
    PublishWithheld,
    Refused,
    RemovalsUnconfirmed,
    TopicSyncError,
)
from topic_sync.fcm.wire import MAX_TOKENS_PER_CALL
from topic_sync.inputs import arrival, manifest
from topic_sync.inputs.audience import iter_audience, iter_rows, source_name
from topic_sync.inputs.message import MessageTemplate, convention_warnings, load_message
from topic_sync.pool import PoolPolicy, topic_for
from topic_sync.redact import mask_url, scrub, shorten
from topic_sync.states import FcmApi, Op, PublishState, RunStatus, SubscriptionStatus
from topic_sync.store.db import advisory_lock, campaign_lock

BLOCKING_SAMPLE = 10  # tokens named when owed removals withhold a publish


class RunOutcome(enum.StrEnum):
    """How a call of run_day ended (its exit code is 0); other endings are exceptions."""

    DRY_RUN = "dry-run"
    SYNCED = "synced"  # --sync-only: synced, waiting for a later run to publish
    PUBLISHED = "published"
    ALREADY_PUBLISHED = "already-published"


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What a day's run is told, as plain values: the application layer fills every field
    named as a setting from the resolved settings (defaults applied there, once)."""

    day: dt.date
    prefix: str
    pool_size: int
    audience_path: Path | None  # None: audience_query says where the audience is; - : stdin
    message_path: Path
    live: bool
    max_churn: float
    max_size_change: float
    max_operations: int | None
    allow_large_churn: bool
    republish: bool = False
    mark_published: bool = False  # an unconfirmed publish did go out: record it, send nothing
    full_tokens: bool = False  # name tokens whole in messages (they are device identifiers)
    propagation_delay: float
    retry: RetryPolicy
    batch_size: int = MAX_TOKENS_PER_CALL
    concurrency: int
    deadline: float  # seconds from the start of the run
    max_dead: float
    pool_policy: PoolPolicy
    rest_period: float  # seconds a published topic rests (cost policy)
    token_column: str | None
    audience_query: str | None = None  # a SELECT or a table name
    audience_database_url: str | None = None  # None: the job's
    stdin: BinaryIO | None = None  # what audience path "-" reads
    wait_for: Path | None
    wait_timeout: float
    wait_interval: float = arrival.POLL_SECONDS
    # The message's data keys naming its kind and version: missing ones are warned about.
    convention_keys: tuple[str, str]
    campaign: str | None = None  # the configuration file's campaign; None: named after prefix
    pool_size_given: bool = True  # False: not configured: the campaign's recorded one is used
    timezone: str | None = None  # the configuration file's time zone of the campaign, if any
    # Where a publish FCM accepted is kept when the database cannot record it (last resort).
    evidence_dir: Path | None = None
    publish_at: dt.time | None = None  # local time the message goes out; None: once synced
    publish_by: dt.time | None = None  # the latest it may go out; None: publish_at + 2 h
    publish_late: bool = False  # send even past publish_by (recorded as late)
    step: Step = Step.SYNC_AND_PUBLISH
    rate_limit: float  # what the sync estimate assumes at most

    def __post_init__(self) -> None:
        if (self.audience_path is None) == (self.audience_query is None):
            raise ValueError("give either an audience file or an audience query")
        if not 1 <= self.batch_size <= MAX_TOKENS_PER_CALL:
            raise ValueError(f"batch size must be 1 to {MAX_TOKENS_PER_CALL}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 <= self.max_dead <= 1:
            raise ValueError("max dead must be a share between 0 and 1")
        if self.republish and self.mark_published:
            raise ValueError("--republish and --mark-published contradict each other")
        if self.publish_by is not None and self.publish_at is None:
            raise ValueError("--publish-by goes with --publish-at")
        if self.publish_by is not None and self.publish_by == self.publish_at:
            raise ValueError("--publish-by must be later than --publish-at")

    @property
    def spec(self) -> CampaignSpec:
        return CampaignSpec(
            prefix=self.prefix,
            pool_size=self.pool_size,
            name=self.campaign,
            pool_size_given=self.pool_size_given,
            timezone=self.timezone,
        )

    @property
    def audience_name(self) -> str:
        """How the audience is named in messages and in the run's row."""
        if self.audience_path is None:
            return store.AUDIENCE_QUERY_NAME
        return source_name(self.audience_path)


@dataclass
class RunResult:
    status: RunOutcome
    day: dt.date
    prefix: str
    topic: str
    plan: store.Plan | None = None
    # What this run's sync did: its row's counts (the current attempt's). All zero for a run
    # that synced nothing, such as one taking over a synced day's wait (the run that synced
    # reported them, and the row keeps them).
    counts: SyncCounts = field(default_factory=SyncCounts)
    failed: dict[str, int] = field(default_factory=dict)
    owed_subscriptions: int = 0
    message_id: str | None = None
    note: str | None = None
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase of the run
    metrics_errors: list[str] = field(default_factory=list)  # exports that failed (app layer)
    warnings: list[str] = field(default_factory=list)  # for people; the exit code ignores them
    campaign: str | None = None  # the campaign's name (None: named after the prefix)
    audience_change: store.AudienceChange | None = None  # against the previous audience
    choice: TopicChoice | None = None  # how the topic was chosen (None: the date published)
    window: Window | None = None  # the day's publish window, if it has one
    synced_at: dt.datetime | None = None  # when the sync completed (the injected clock)
    sent_at: dt.datetime | None = None  # when the message was handed to FCM
    late: bool = False  # sent past publish_by (--publish-late)
    resumed: bool = False  # a synced day's wait taken over: no sync this time

    @property
    def exit_code(self) -> ExitCode:
        """Published with additions still owed is not done: those tokens missed the day's
        message, and exit 0 would hide it from cron and monitoring."""
        if self.status is RunOutcome.PUBLISHED and self.owed_subscriptions:
            return ExitCode.INCOMPLETE
        return ExitCode.OK

    @property
    def duration_seconds(self) -> float:
        """The run's time, phase by phase added up."""
        return sum(self.phases.values())

    def summary(self) -> dict[str, Any]:
        """The JSON summary (`--json`, the `run finished` event); people read describe_run."""
        plan = self.plan
        return {
            "status": self.status,
            "date": self.day.isoformat(),
            "campaign": self.campaign or self.prefix,
            "prefix": self.prefix,
            "topic": self.topic,
            "audience": plan.audience_size if plan else None,
            "duplicates": plan.duplicates if plan else None,
            "skipped_invalid": plan.skipped if plan else None,  # dead or forgotten
            "skipped_dead": plan.skipped_dead if plan else None,
            "suppressed": plan.suppressed if plan else None,
            "retried_dead": plan.retried_dead if plan else None,
            "newly_dead": self.counts.newly_dead,
            "to_add": plan.to_add if plan else None,
            "to_remove": plan.to_remove if plan else None,
            "added": self.counts.added,
            "removed": self.counts.removed,
            "failed": self.failed,
            "owed_subscriptions": self.owed_subscriptions,
            "attempts": self.counts.attempts,
            "retries": self.counts.retries,
            "outcomes": dict(self.counts.outcomes),
            "wait_seconds": round(self.counts.wait_seconds, 3),
            "message_id": self.message_id,
            "note": self.note,
            "phases": {name: round(seconds, 3) for name, seconds in self.phases.items()},
            "metrics_errors": self.metrics_errors,
            "warnings": list(self.warnings),
            "audience_change": self.audience_change.summary() if self.audience_change else None,
            "choice": self.choice.summary() if self.choice else None,
            "publish_at": self.window.publish_at.isoformat() if self.window else None,
            "publish_by": self.window.publish_by.isoformat() if self.window else None,
            "synced_at": self.synced_at.isoformat() if self.synced_at else None,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "lateness_seconds": self.lateness_seconds,
            "sync_margin_seconds": self.sync_margin_seconds,
            "late": self.late,
            "resumed": self.resumed,
        }

    @property
    def lateness_seconds(self) -> float | None:
        """The send time against publish_at (negative: never; 0: on time)."""
        if self.window is None or self.sent_at is None:
            return None
        return round((self.sent_at - self.window.publish_at).total_seconds(), 3)

    @property
    def sync_margin_seconds(self) -> float | None:
        """publish_at minus the sync's end: how much sooner the sync could have started
        late (negative: it finished after publish_at)."""
        if self.window is None or self.synced_at is None or self.resumed:
            return None
        return round((self.window.publish_at - self.synced_at).total_seconds(), 3)


def run_day(opts: RunOptions, deps: Deps) -> RunResult:
    spec = opts.spec
    with deps.engine.connect() as conn:
        found = campaign.find(conn, spec)
        pool_size, warnings = campaign.pool_size_of(conn, spec, found)
        recorded = store.recorded_topic(conn, found.id, opts.day) if found else None
        conn.rollback()
    # The date's topic is chosen once its audience is loaded (engine.choice). Before that,
    # the message is validated for the recorded topic, else the ordinal one: FCM checks
    # only a topic name's form, the same for every topic of the pool.
    topic = recorded or topic_for(opts.prefix, pool_size, opts.day)
    if opts.wait_for is not None:
        ordinal = opts.pool_policy is PoolPolicy.ORDINAL
        await_audience(opts, deps, recorded or (topic if ordinal else ""), pool_size)
    template = load_message(
        opts.message_path, day=opts.day, collapse_key=opts.prefix, now=deps.now()
    )
    warnings += convention_warnings(template, opts.message_path, opts.convention_keys)
    # The day's likely sync, from the campaign's recent days: how long it will take, and
    # how many requests the transport gets ready for while the plan is made.
    likely = None
    if opts.live and found is not None and opts.step is not Step.PUBLISH:
        likely = _estimate(opts, deps, found.id)
        warnings += _estimate_warnings(opts, deps, found, likely)
    for warning in warnings:
        deps.log(f"warning: {warning}")
    if not opts.live:
        result = _dry_run(opts, deps, template, found, pool_size, recorded)
    else:
        name = found.name if found else spec.campaign_name
        lock_name = campaign_lock(name)
        locked = False
        try:
            with advisory_lock(deps.engine, lock_name, what="run", log=deps.log) as lock:
                locked = True
                result = _live_run(
                    opts, deps, topic, template, lock.verify, found, name, pool_size, likely
                )
        except Locked as error:
            if locked or found is None:
                raise
            raise _held_by(deps, found, error) from None
    result.warnings = [*warnings, *_audience_warnings(result.audience_change, deps)]
    result.campaign = found.name if found else spec.campaign_name
    return result


def _held_by(deps: Deps, record: store.CampaignRecord, error: Locked) -> Locked:
    """The lock's refusal, saying what the holder is doing when it waits to publish."""
    with deps.engine.connect() as conn:
        waiting = store.waiting_run(conn, record.id)
        conn.rollback()
    window = window_of(waiting) if waiting else None
    if waiting is None:
        return error
    when = f"at {window.local()}" if window else "when a 'run --publish-only' says so"
    return Locked(
        f"another run of campaign {record.name!r} holds its lock: {waiting.run_date} is "
        f"synced to {waiting.topic} and waiting to publish {when} (run #{waiting.id}). Not "
        "starting a second one: that run publishes it; 'topic-sync status' shows it"
    )


def _estimate_warnings(
    opts: RunOptions, deps: Deps, record: store.CampaignRecord, found: SyncEstimate | None
) -> list[str]:
    """Log how long the day's sync will likely take; warn when, started now, it will
    likely not be done by publish_at (engine.estimate)."""
    window = window_for(opts, record.timezone)
    if window is None:
        return []
    if found is not None:
        deps.log(f"today's sync: {found.describe()}; publish_at {window.local()}")
    warning = late_warning(found, deps.now(), window.publish_at)
    return [warning] if warning else []


def window_for(opts: RunOptions, zone: str) -> Window | None:
    """The day's publish window in the campaign's recorded time zone (None: no publish_at)."""
    if opts.publish_at is None:
        return None
    return Window.of(opts.day, opts.publish_at, opts.publish_by, zone)


def _days(change: store.AudienceChange, opts: RunOptions) -> int:
    return max(1, (opts.day - change.previous_day).days)


def _per_days(limit: float, days: int) -> str:
    return f"{limit:.0%}" + (f" a day over {days} days" if days > 1 else "")


def audience_problems(opts: RunOptions, change: store.AudienceChange) -> list[str]:
    """What makes the day's audience look broken next to the previous one (empty when
    nothing does). A limit is per day: over d days since the previous audience, a share c
    of change a day compounds to 1 - (1 - c)^d gone or new, and a size change s to between
    (1 - s)^d and (1 + s)^d times the previous size."""
    days = _days(change, opts)
    churn = 1 - (1 - opts.max_churn) ** days
    problems = []
    if change.left_share > churn:
        problems.append(
            f"{change.left} of the previous audience's {change.previous} tokens are gone "
            f"({change.left_share:.0%}; --max-churn {_per_days(opts.max_churn, days)})"
        )
    if change.new_share > churn:
        problems.append(
            f"{change.new} of its {change.size} tokens are new ({change.new_share:.0%}; "
            f"--max-churn {_per_days(opts.max_churn, days)})"
        )
    ratio = change.size / change.previous if change.previous else 1.0
    low = max(0.0, 1 - opts.max_size_change) ** days
    if not low <= ratio <= (1 + opts.max_size_change) ** days:
        problems.append(
            f"it is {abs(change.size_change):.0%} {'smaller' if ratio < 1 else 'larger'} "
            f"({change.size} tokens against {change.previous}; --max-size-change "
            f"{_per_days(opts.max_size_change, days)})"
        )
    return problems


def _guard(opts: RunOptions, plan: store.Plan, change: store.AudienceChange | None) -> None:
    """Refuse an audience that looks broken (empty, cut short, the wrong day's file, a join
    gone wrong) next to the campaign's previous one, and a plan over --max-operations."""
    if opts.allow_large_churn:
        return
    usable = plan.audience_size - plan.skipped
    if usable == 0:
        raise Refused(
            f"the audience has no usable tokens ({plan.audience_size} all invalid or "
            f"forgotten): that would empty {plan.topic}. Pass --allow-large-churn if intended"
        )
    problems = audience_problems(opts, change) if change is not None else []
    if problems:
        assert change is not None
        raise Refused(
            f"{opts.day}'s audience does not look like a day of {opts.spec.campaign_name}: "
            + "; ".join(problems)
            + f" (compared with the audience of {change.previous_day}). Check the audience "
            "(empty, cut short, the wrong day's file, a join gone wrong?), or pass "
            "--allow-large-churn if this change is intended"
        )
    operations = plan.to_add + plan.to_remove
    if opts.max_operations is not None and operations > opts.max_operations:
        raise Refused(
            f"{plan.topic} needs {operations} operations ({plan.to_remove} removals, "
            f"{plan.to_add} additions), over --max-operations {opts.max_operations}. Raise "
            "the limit, or pass --allow-large-churn if this is intended"
        )


def _audience_warnings(change: store.AudienceChange | None, deps: Deps) -> list[str]:
    """An audience identical to the previous date's may be the wrong day's file again."""
    if change is None or not change.previous == change.kept == change.size:
        return []
    warning = (
        f"the audience is exactly the audience of {change.previous_day} ({change.size} "
        "tokens): if it changes every day, is this the wrong day's file?"
    )
    deps.log(f"warning: {warning}")
    return [warning]


def await_audience(opts: RunOptions, deps: Deps, topic: str, pool_size: int) -> float:
    """Before anything else, wait for --wait-for; returns the seconds waited.

    Timed out: a live run records the day as `no_audience` (nothing synced, nothing
    published; `topic` is what the row shows: '' while none is chosen) and
    AudienceNeverCame ends it with its own exit code.
    """
    assert opts.wait_for is not None
    path = opts.wait_for
    is_audience = arrival.is_same_path(path, opts.audience_path)
    awaited = arrival.waiting_for(path, opts.audience_path)
    deps.log(f"waiting up to {format_duration(opts.wait_timeout)} for {awaited}")
    got = arrival.wait_for(
        path,
        audience=opts.audience_path,
        timeout=opts.wait_timeout,
        sleep=deps.sleep,
        monotonic=deps.monotonic,
        should_stop=deps.should_stop,
        interval=opts.wait_interval,
        report=deps.log,
    )
    if got.arrived:
        deps.log(f"{path} is ready after {format_duration(got.waited)}")
        audience = opts.audience_path
        marker_only = not is_audience and audience is not None and str(audience) != "-"
        if marker_only and audience is not None and not audience.exists():
            raise InputFileError(audience, f"no such file (but the marker {path} is there)")
        return got.waited
    still = "still growing" if got.seen == "growing" else "not there"
    note = (
        f"the audience never came: {path} was {still} after waiting {format_duration(got.waited)} "
        "(--wait-timeout); nothing synced, nothing published"
    )
    if opts.live:
        with deps.engine.begin() as conn:
            check_target(conn, deps.client.target, bind=False)
            record = campaign.settle(conn, opts.spec, pool_size=pool_size, by=process_owner("run"))
            store.record_no_audience(
                conn,
                campaign_id=record.id,
                prefix=opts.prefix,
                day=opts.day,
                topic=topic,
                transport=deps.client.transport,
                audience_path=opts.audience_name,
                note=note,
            )
    raise AudienceNeverCame(f"{opts.day}: {note}")


def audience_manifests(opts: RunOptions) -> list[manifest.Manifest]:
    """What the producer said about the audience (inputs.manifest), checked for the day and
    the file's name; a query's rows can be counted but not checksummed."""
    marker = opts.wait_for
    same = marker is not None and arrival.is_same_path(marker, opts.audience_path)
    found = manifest.manifests_for(opts.audience_path, marker, marker_is_audience=same)
    manifest.check_names(found, opts.audience_path)
    manifest.check_day(found, opts.day)
    if opts.audience_path is None and manifest.wants_sha256(found):
        source = next(m.source for m in found if m.sha256)
        raise InputFileError(
            source, "a checksum cannot be checked on a query's rows: give lines=N instead"
        )
    return found


@contextlib.contextmanager
def audience_connection(
    engine: Engine | None, url: str | None
) -> Iterator[psycopg.Connection[Any]]:
    """The connection an audience query reads from (the job's database, or `url`'s); one
    that cannot be reached is an error naming the URL, masked."""
    with contextlib.ExitStack() as stack:
        try:
            raw = stack.enter_context(store.audience_query_connection(engine, url))
        except Exception as error:
            if url is None:
                raise
            reason = scrub(str(error), url).strip().splitlines()
            raise TopicSyncError(
                f"cannot reach the audience database {mask_url(url)}: "
                f"{reason[0] if reason else type(error).__name__}"
            ) from None
        yield raw


@contextlib.contextmanager
def audience_tokens(opts: RunOptions, deps: Deps) -> Iterator[Iterator[str]]:
    """The audience's valid tokens, streamed: from the file (or stdin), or from the query
    (on a connection of its own, in a read-only transaction); checked against the
    producer's manifests when it ends."""
    manifests = audience_manifests(opts)
    for m in manifests:
        deps.log(
            f"{opts.audience_name} is checked against its manifest {m.source} ({m.describe()})"
        )
    if opts.audience_query is None:
        assert opts.audience_path is not None
        tokens = iter_audience(
            opts.audience_path,
            token_column=opts.token_column,
            stdin=opts.stdin,
            manifests=manifests,
        )
        with contextlib.closing(tokens):
            yield tokens
        return
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(audience_connection(deps.engine, opts.audience_database_url))
        rows = stack.enter_context(
            contextlib.closing(
                store.audience_query_rows(raw, opts.audience_query, opts.token_column)
            )
        )
        yield stack.enter_context(
            contextlib.closing(iter_rows(rows, store.AUDIENCE_QUERY_NAME, manifests))
        )


def _load(
    opts: RunOptions,
    conn: Connection,
    deps: Deps,
    phases: Phases,
    pool_size: int,
    recorded: str | None,
    *,
    explain: bool,
) -> tuple[store.StagedAudience, TopicChoice]:
    """Load and stage the audience, then choose the date's topic over it."""
    with phases.timing("load"), audience_tokens(opts, deps) as tokens:
        lines = store.load_audience(conn, tokens)
    with phases.timing("plan"):
        staged = store.stage_audience(conn, lines, opts.day)
        choice = choose(
            conn,
            prefix=opts.prefix,
            pool_size=pool_size,
            day=opts.day,
            policy=opts.pool_policy,
            rest=dt.timedelta(seconds=opts.rest_period),
            recorded=recorded,
            explain=explain,
        )
    return staged, choice


def _plan(
    opts: RunOptions,
    conn: Connection,
    topic: str,
    run_id: int | None,
    staged: store.StagedAudience,
    deps: Deps,
    phases: Phases,
    record: store.CampaignRecord | None,
) -> tuple[store.Plan, store.AudienceChange | None]:
    """Diff and guard the staged audience; `record` None: the campaign is not registered yet
    (a dry run of its first day), so there is no earlier audience to compare with."""
    with phases.timing("plan"):
        plan = store.plan_topic(conn, topic, run_id, staged.lines, staged=staged)
        change = store.audience_change(conn, record.id, opts.day) if record else None
    if change is None:
        deps.log(
            f"no earlier audience of campaign {opts.spec.campaign_name!r} to compare with: "
            "the audience guard compares from the next day on"
        )
    else:
        deps.log(
            f"audience against {change.previous_day}'s: {change.kept} kept, {change.left} "
            f"gone ({change.left_share:.0%}), {change.new} new ({change.new_share:.0%}), "
            f"size {change.size_change:+.0%}"
        )
    _guard(opts, plan, change)
    return plan, change


def _dry_run(
    opts: RunOptions,
    deps: Deps,
    template: MessageTemplate,
    found: store.CampaignRecord | None,
    pool_size: int,
    recorded: str | None,
) -> RunResult:
    phases = Phases(deps.monotonic)
    with deps.engine.connect() as conn:
        try:
            check_target(conn, deps.client.target, bind=False)
            existing = store.get_run(conn, found.id, opts.day) if found else None
            staged, choice = _load(opts, conn, deps, phases, pool_size, recorded, explain=True)
            topic = choice.topic
            plan, change = _plan(opts, conn, topic, None, staged, deps, phases, found)
        finally:
            conn.rollback()
    send_message(deps, opts.retry, template, topic, validate_only=True)
    note = "dry run: nothing changed; pass --live to apply"
    if found is None:
        note += f" (its first live run registers campaign {opts.spec.campaign_name!r})"
    if existing and existing.publish_state is PublishState.SENT:
        note = "already published; a live run would do nothing"
    return RunResult(
        RunOutcome.DRY_RUN,
        opts.day,
        opts.prefix,
        topic,
        plan=plan,
        note=note,
        audience_change=change,
        choice=choice,
    )


def _live_run(
    opts: RunOptions,
    deps: Deps,
    topic: str,
    template: MessageTemplate,
    verify_lock: Callable[[], None],
    found: store.CampaignRecord | None,
    locked_name: str,
    pool_size: int,
    likely: SyncEstimate | None,
) -> RunResult:
    deadline_at = deps.monotonic() + opts.deadline
    phases = Phases(deps.monotonic)
    if found is not None and opts.evidence_dir is not None:
        record_evidence(deps, opts.evidence_dir, found.id)
    with deps.engine.begin() as conn:
        check_target(conn, deps.client.target, bind=False)
        existing = store.get_run(conn, found.id, opts.day) if found else None
    if existing and existing.publish_state is PublishState.SENT:
        return RunResult(
            RunOutcome.ALREADY_PUBLISHED,
            opts.day,
            opts.prefix,
            existing.topic,
            message_id=existing.message_id,
            note=f"{opts.day} was already published to {existing.topic}; nothing to do",
        )
    if opts.mark_published:
        return _mark_published(opts, deps, existing)
    if existing and existing.publish_state is PublishState.INTENT and not opts.republish:
        raise PublishWithheld(
            f"a publish for {opts.day} to {existing.topic} was started but never confirmed "
            "(the process stopped between sending and recording, or FCM's answer proved "
            "nothing). It may have gone out. Check FCM (or the devices): if it went out, "
            "rerun with --mark-published to record it; if not, with --republish to send it"
        )
    with deps.engine.begin() as conn:
        synced = (
            existing is not None
            and existing.publish_state is PublishState.NONE
            and still_synced(conn, existing)
        )
    if opts.step is Step.PUBLISH and not synced:
        raise NotSynced(_not_synced(opts, existing))
    if synced:
        assert found is not None and existing is not None
        return _resume(opts, deps, template, verify_lock, found, existing, phases)
    window = window_for(
        opts, found.timezone if found else opts.timezone or "UTC"
    )  # as a campaign registers
    late = window is not None and deps.now() > window.publish_by
    if window is not None and late and not opts.publish_late and opts.step is not Step.SYNC:
        _missed_before_start(opts, deps, window, found, existing, pool_size)
    # FCM validates the message while the plan is made; the plan commits only once FCM
    # accepted it, so a message FCM refuses leaves nothing planned, as when it went first.
    # (An audience read from standard input cannot be read again: that plan waits for
    # FCM's answer with its transaction open.)
    deps.warm_up(likely.operations if likely is not None else None)
    validation = Validation(deps, opts.retry, template, topic)
    once = opts.audience_path is not None and str(opts.audience_path) == "-"
    planning = _Planning(opts, deps, phases, validation, found, locked_name, pool_size)
    try:
        planned = planning.plan(wait=once)
    except _NotValidatedYet:
        validation.wait()  # retrying, or slow: not with the plan's transaction open
        planned = planning.plan(wait=True)
    except Exception:
        validation.wait()  # the message's verdict first, as when it went first
        raise
    record, run, plan, choice = planned.campaign, planned.run, planned.plan, planned.choice
    topic = choice.topic  # chosen once per date, in the plan's transaction; the run records it
    if found is None:
        deps.log(
            f"campaign {record.name!r} registered: topic prefix {record.prefix}, "
            f"pool of {record.pool_size}, time zone {record.timezone}"
        )
    deps.topic_chosen(topic)
    deps.log(f"{topic}: {explain(choice)}")
    deps.log(
        f"{topic}: audience {plan.audience_size} ({plan.duplicates} duplicates, "
        f"{plan.skipped_dead} dead and {plan.suppressed} suppressed "
        f"skipped, {plan.retried_dead} dead tried once more); {plan.to_remove} to remove, "
        f"{plan.to_add} to add"
    )

    try:
        result = _sync_and_publish(
            opts,
            deps,
            topic,
            template,
            verify_lock,
            record,
            run,
            planned.fence,
            plan,
            deadline_at,
            phases,
        )
    except Exception as error:
        # Whatever ended the run, its record says so: it must not look still in progress.
        _record_stop(deps, run.id, topic, error)
        raise
    result.audience_change = planned.change
    result.choice = choice
    return result


def _estimate(opts: RunOptions, deps: Deps, campaign_id: int) -> SyncEstimate | None:
    with deps.engine.connect() as conn:
        found = estimate(
            conn,
            campaign_id,
            opts.day,
            rate_limit=opts.rate_limit,
            api=FcmApi.of_transport(deps.client.transport),
        )
        conn.rollback()
    return found


def _not_synced(opts: RunOptions, existing: store.RunRecord | None) -> str:
    if existing is None:
        why = "it has no run yet"
    elif existing.synced_at is None:
        why = f"its run is {existing.status} ({existing.status.why}), not synced"
    else:
        why = (
            f"its sync of {existing.topic} no longer stands (the topic was planned again since, "
            "or removals from it became owed)"
        )
    return (
        f"--publish-only: {opts.day} is not synced: {why}; nothing was sent. Sync it first "
        f"('topic-sync run --date {opts.day} --live --sync-only', or without --sync-only to "
        "sync and publish)"
    )


def _missed_before_start(
    opts: RunOptions,
    deps: Deps,
    window: Window,
    found: store.CampaignRecord | None,
    existing: store.RunRecord | None,
    pool_size: int,
) -> None:
    """Started past publish_by: nothing is synced or sent; the day is recorded `missed`."""
    note = (
        f"missed its window: the run started at {window.local(deps.now())}, past publish_by "
        f"{window.local(window.publish_by)} (publish_at {window.local()}); nothing synced, "
        "nothing published"
    )
    with deps.engine.begin() as conn:
        if existing is not None:
            store.finish_run(conn, existing.id, RunStatus.MISSED, note)
        else:
            record = found or campaign.settle(
                conn, opts.spec, pool_size=pool_size, by=process_owner("run")
            )
            store.record_no_audience(
                conn,
                campaign_id=record.id,
                prefix=opts.prefix,
                day=opts.day,
                topic=topic_for(opts.prefix, pool_size, opts.day)
                if opts.pool_policy is PoolPolicy.ORDINAL
                else "",
                transport=deps.client.transport,
                audience_path=opts.audience_name,
                note=note,
                status=RunStatus.MISSED,
            )
    raise MissedWindow(
        f"{opts.day} {note}. To send it anyway: 'topic-sync run --date {opts.day} --live "
        "--publish-late' (recorded as late)"
    )


def _resume(
    opts: RunOptions,
    deps: Deps,
    template: MessageTemplate,
    verify_lock: Callable[[], None],
    record: store.CampaignRecord,
    existing: store.RunRecord,
    phases: Phases,
) -> RunResult:
    """The day is synced and its plan still stands (its fence is its run's, nothing owed
    to remove): take over its wait and publish, without loading or syncing anything."""
    assert existing.synced_at is not None
    topic = existing.topic
    deps.topic_chosen(topic)
    if opts.step is Step.SYNC:
        return RunResult(
            RunOutcome.SYNCED,
            opts.day,
            opts.prefix,
            topic,
            note=f"{opts.day} is already synced to {topic}; nothing to do",
            resumed=True,
        )
    send_message(deps, opts.retry, template, topic, validate_only=True)
    window = window_for(opts, record.timezone)
    with deps.engine.begin() as conn:
        fence = store.read_fence(conn, topic, lock=False)
        resumed = store.resume_waiting(
            conn,
            existing.id,
            publish_at=window.publish_at if window else None,
            publish_by=window.publish_by if window else None,
            note=_waiting_note(window),
        )
    if fence is None or not resumed:
        raise NotSynced(_not_synced(opts, existing))
    deps.log(
        f"{opts.day} was synced to {topic} at {existing.synced_at.isoformat()} and its plan "
        "still stands: resuming into the publish, nothing synced again"
    )
    try:
        sent = _publish(
            opts,
            deps,
            template,
            verify_lock,
            record,
            existing.id,
            topic,
            fence.epoch,
            window,
            existing.synced_at,
            phases,
        )
    except Exception as error:
        _record_stop(deps, existing.id, topic, error)
        raise
    with deps.engine.connect() as conn:
        owed_add = store.pending_counts(conn, topic)[0]
        conn.rollback()
    result = RunResult(
        RunOutcome.PUBLISHED if sent.message_id else RunOutcome.ALREADY_PUBLISHED,
        opts.day,
        opts.prefix,
        topic,
        owed_subscriptions=owed_add,
        message_id=sent.message_id,
        phases=phases.seconds,
        window=window,
        synced_at=existing.synced_at,
        sent_at=sent.sent_at,
        late=sent.late,
        resumed=True,
    )
    if owed_add:
        result.note = _owed_note(owed_add, topic)
    return result


def _publish(
    opts: RunOptions,
    deps: Deps,
    template: MessageTemplate,
    verify_lock: Callable[[], None],
    record: store.CampaignRecord,
    run_id: int,
    topic: str,
    epoch: int,
    window: Window | None,
    synced_at: dt.datetime,
    phases: Phases,
) -> Sent:
    """The publish step of a synced day (engine.publish), with the run's options."""
    plan = PublishPlan(
        run_id=run_id,
        day=opts.day,
        topic=topic,
        epoch=epoch,
        window=window,
        publish_late=opts.publish_late,
        republish=opts.republish,
        propagation_delay=opts.propagation_delay,
        policy=opts.retry,
        synced_at=synced_at,
    )
    receipt = Receipt(record.name, record.id, opts.day, opts.evidence_dir)
    return publish_day(deps, plan, template, verify_lock, receipt, phases)


def _waiting_note(window: Window | None) -> str:
    if window is None:
        return "synced; not published yet ('run --publish-only' publishes it)"
    return (
        f"synced, waiting to publish at {window.local()} (publish_by "
        f"{window.local(window.publish_by)})"
    )


def _owed_note(owed_add: int, topic: str) -> str:
    return (
        f"published, but {owed_add} tokens could not be subscribed (no answer proved their "
        "subscription) and missed today's message: exit 12. 'topic-sync report' lists "
        f"them; 'topic-sync reconcile --topic {topic} --live' subscribes them for the next "
        "message"
    )


class _NotValidatedYet(Exception):
    """The plan was made before FCM answered the validation: it is rolled back."""


class Validation:
    """The message's validate_only send, in a thread of its own from its creation."""

    def __init__(
        self, deps: Deps, policy: RetryPolicy, template: MessageTemplate, topic: str
    ) -> None:
        self._error: BaseException | None = None

        def validate() -> None:
            try:
                send_message(deps, policy, template, topic, validate_only=True)
            except BaseException as error:  # re-raised by wait(), in the run's thread
                self._error = error

        self._thread = threading.Thread(target=validate, name="validate", daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        """Until FCM answered (retries included); raises what the validation raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error


@dataclass
class _Planned:
    campaign: store.CampaignRecord
    run: store.RunRecord
    fence: store.Fence
    plan: store.Plan
    change: store.AudienceChange | None
    choice: TopicChoice


@dataclass
class _Planning:
    """Record the campaign, choose the date's topic, record the run, take the topic's fence
    and plan it, in one transaction that commits only if FCM accepted the message (unless
    `wait`, raises _NotValidatedYet if FCM has not answered yet)."""

    opts: RunOptions
    deps: Deps
    phases: Phases
    validation: Validation
    found: store.CampaignRecord | None
    locked_name: str
    pool_size: int

    def plan(self, *, wait: bool) -> _Planned:
        opts, deps = self.opts, self.deps
        with deps.engine.begin() as conn:
            check_target(conn, deps.client.target, bind=True)
            owner = process_owner(f"run {self.locked_name} {opts.day}")
            record = campaign.settle(conn, opts.spec, pool_size=self.pool_size, by=owner)
            if record.name != self.locked_name:
                raise CampaignMismatch(
                    f"campaign {self.locked_name!r} was renamed {record.name!r} while this run "
                    "started; nothing was done: run it again"
                )
            recorded = store.recorded_topic(conn, record.id, opts.day)
            staged, choice = _load(
                opts, conn, deps, self.phases, self.pool_size, recorded, explain=False
            )
            run = store.start_run(
                conn,
                campaign_id=record.id,
                prefix=opts.prefix,
                day=opts.day,
                topic=choice.topic,
                transport=deps.client.transport,
                audience_path=opts.audience_name,
            )
            fence = take_fence(conn, choice.topic, owner, run.id)
            plan, change = _plan(
                opts, conn, choice.topic, run.id, staged, deps, self.phases, record
            )
            store.save_plan(conn, run.id, plan)
            store.save_audience(conn, record.id, opts.day, run.id)
            if not wait and not self.validation.done():
                raise _NotValidatedYet
            self.validation.wait()
        return _Planned(record, run, fence, plan, change, choice)


def _sync_and_publish(
    opts: RunOptions,
    deps: Deps,
    topic: str,
    template: MessageTemplate,
    verify_lock: Callable[[], None],
    record: store.CampaignRecord,
    run: store.RunRecord,
    fence: store.Fence,
    plan: store.Plan,
    deadline_at: float,
    phases: Phases,
) -> RunResult:
    guard = DeadGuard.for_work(opts.max_dead, plan.to_add + plan.to_remove)
    work = Work(deps, topic, opts, deadline_at, fence.epoch, guard, run_id=run.id)
    finished = work.drain_all(
        [(Op.UNSUBSCRIBE, plan.to_remove), (Op.SUBSCRIBE, plan.to_add)],
        spent=lambda op, seconds: phases.add(
            "additions" if op is Op.SUBSCRIBE else "removals", seconds
        ),
    )

    with deps.engine.begin() as conn:
        owed_add, owed_remove = store.pending_counts(conn, topic)
        failed = store.settle_failures(conn, run.id)
        counts = _counts_of(store.run_counts(conn, run.id), work.failures)
        stopped = deps.should_stop()
        if not finished:
            why = "stopped on request" if stopped else "deadline reached"
            note = f"{why}: {owed_remove} removals and {owed_add} additions on {topic} still owed"
            store.finish_run(
                conn, run.id, RunStatus.INTERRUPTED if stopped else RunStatus.DEADLINE, note
            )
        elif owed_remove:
            sample = store.pending_sample(
                conn, topic, SubscriptionStatus.PENDING_UNSUBSCRIBE, BLOCKING_SAMPLE
            )
            note = f"{owed_remove} removals from {topic} unconfirmed"
            store.finish_run(conn, run.id, RunStatus.WITHHELD, note)
    if not finished and stopped:
        raise Interrupted(
            f"stopped on request before {opts.day} was finished: {owed_remove} removals and "
            f"{owed_add} additions on {topic} still owed, nothing published. Everything "
            "confirmed is recorded; rerun this date to resume"
        )
    if not finished:
        raise DeadlineReached(
            f"not publishing {opts.day}: the run's deadline ({format_duration(opts.deadline)}) "
            f"passed with {owed_remove} removals and {owed_add} additions on {topic} still "
            "owed; a rerun of this date continues where it stopped"
        )
    if owed_remove:
        names = sample if opts.full_tokens else [shorten(t) for t in sample]
        shown = ", ".join(names) + (" …" if owed_remove > len(sample) else "")
        raise RemovalsUnconfirmed(
            f"not publishing {opts.day}: {owed_remove} tokens may still be subscribed to {topic} "
            f"and would receive a message not meant for them: {shown}. Once FCM recovers, "
            "reconcile (or a rerun of this date) retries them, and a rerun publishes"
        )

    window = window_for(opts, record.timezone)
    synced_at = deps.now()
    with deps.engine.begin() as conn:
        store.mark_synced(
            conn,
            run.id,
            at=synced_at,
            publish_at=window.publish_at if window else None,
            publish_by=window.publish_by if window else None,
            note=_waiting_note(window),
        )
    result = RunResult(
        RunOutcome.SYNCED,
        opts.day,
        opts.prefix,
        topic,
        plan=plan,
        counts=counts,
        failed=failed,
        owed_subscriptions=owed_add,
        phases=phases.seconds,
        window=window,
        synced_at=synced_at,
    )
    if opts.step is Step.SYNC:
        result.note = f"{opts.day} {_waiting_note(window)}"
        return result
    if window is not None and synced_at > window.publish_at:
        deps.log(
            f"the sync ended after publish_at {window.local()}; publishing at once "
            f"(publish_by {window.local(window.publish_by)})"
        )
    sent = _publish(
        opts,
        deps,
        template,
        verify_lock,
        record,
        run.id,
        topic,
        fence.epoch,
        window,
        synced_at,
        phases,
    )
    result.status = RunOutcome.PUBLISHED if sent.message_id else RunOutcome.ALREADY_PUBLISHED
    result.message_id, result.sent_at, result.late = sent.message_id, sent.sent_at, sent.late
    if owed_add:
        result.note = _owed_note(owed_add, topic)
    return result


def _counts_of(row: store.RunCounts, failures: Counter[tuple[str, str]]) -> SyncCounts:
    """A run's counts as its row keeps them (each batch added its own there), and its failed
    attempts per (op, code), which the row does not keep."""
    return SyncCounts(
        added=row.added,
        removed=row.removed,
        attempts=row.attempts,
        retries=row.retries,
        wait_seconds=row.wait_seconds,
        newly_dead=row.newly_dead,
        outcomes=Counter(row.outcomes),
        failures=failures,
    )


def _mark_published(opts: RunOptions, deps: Deps, existing: store.RunRecord | None) -> RunResult:
    """The operator checked: the unconfirmed publish did go out. Record it; send nothing."""
    if existing is None or existing.publish_state is not PublishState.INTENT:
        raise BadInput(
            f"--mark-published: {opts.day} has no unconfirmed publish to record "
            f"(publish state: {existing.publish_state if existing else 'no run'})"
        )
    with deps.engine.begin() as conn:
        store.confirm_publish(conn, existing.id, None, note="recorded as sent by an operator")
    return RunResult(
        RunOutcome.ALREADY_PUBLISHED,
        opts.day,
        opts.prefix,
        existing.topic,
        note=f"{opts.day}'s publish to {existing.topic} recorded as sent (--mark-published)",
    )


def _record_stop(deps: Deps, run_id: int, topic: str, error: Exception) -> None:
    """Say on the run's record why it ended, unless the run already said so.

    A record still open (syncing, or synced and waiting) gets a status and the reason; one
    already closed (withheld, deadline, interrupted, missed, an unconfirmed publish) is left
    as it is. A run
    fenced out by another process of the same run leaves the record to that one.
    """
    if isinstance(error, PublishUnrecorded):
        return  # the database is out of reach: the evidence and the message say it all
    message = (
        error.message
        if isinstance(error, TopicSyncError)
        else f"unexpected error: {type(error).__name__}: {error}"
    )
    status = RunStatus.FAILED
    if isinstance(error, Fenced):
        status = RunStatus.FENCED
    elif isinstance(error, DeadTokenGuard):
        status = RunStatus.GUARDED
    elif isinstance(error, PublishWithheld):
        status = RunStatus.WITHHELD
    with deps.engine.begin() as conn:
        if isinstance(error, Fenced):
            fence = store.read_fence(conn, topic, lock=False)
            if fence is not None and fence.run_id == run_id:
                return
        open_states = (RunStatus.PLANNED, RunStatus.SYNCING, RunStatus.WAITING)
        if store.run_status(conn, run_id) not in open_states:
            return
        store.settle_failures(conn, run_id)
        store.finish_run(conn, run_id, status, message)
