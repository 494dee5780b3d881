"""The sync engine: make one topic's membership equal to the day's audience, then
publish the day's message to it once.

Order of a live run, and why:
1. Validate the message (locally and with FCM's validate_only) before anything
   changes, so a bad message never leaves a synced topic without its push.
2. Plan in one transaction: COPY the audience, diff in SQL, apply the churn
   guard. A bad line or a refused plan rolls back: nothing changes.
3. Removals first, then additions, each batch in its own transaction that
   commits only after FCM answered. Retryable tokens are re-batched per the
   retry policy; what still fails stays recorded.
4. Publish only when no removal from the topic is unconfirmed, and record the
   intent before sending so a crash can never lead to a second send.

Two proofs guard every irreversible step. The topic's fence (store.take_fence):
the plan takes a new epoch, and every batch and the publish check it in their own
transaction, so a run that lost its lock and whose topic someone else planned
since stops instead of publishing a stale plan. And only an answer about a token
settles it (error_table.rule_for); a flood of "dead" answers trips the dead-token
guard, which treats them as a systemic fault rather than a mass uninstall.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import tenacity
from sqlalchemy import Engine

from topic_sync import store
from topic_sync.engine.retry import RetryPolicy
from topic_sync.errors import (
    BadInput,
    CredentialsError,
    DeadlineReached,
    DeadTokenGuard,
    ExitCode,
    Fenced,
    Interrupted,
    Locked,
    PublishWithheld,
    Refused,
    TopicSyncError,
)
from topic_sync.fcm.client import CREDENTIALS_HELP, MAX_TOKENS_PER_CALL, FcmClient, PublishError
from topic_sync.fcm.error_table import Op, Outcome, rule_for
from topic_sync.fcm.pacer import Pacer
from topic_sync.fcm.target import check_target
from topic_sync.inputs.audience import iter_audience
from topic_sync.inputs.message import MessageTemplate, load_message
from topic_sync.pool import topic_for
from topic_sync.store.db import advisory_lock, is_disconnect

CONFIRMED = {Op.SUBSCRIBE: "subscribed", Op.UNSUBSCRIBE: "unsubscribed"}
PENDING = {Op.SUBSCRIBE: "pending_subscribe", Op.UNSUBSCRIBE: "pending_unsubscribe"}
BLOCKING_SAMPLE = 10
DEFAULT_CONCURRENCY = 4
DEFAULT_DEADLINE = 3 * 3600.0
DB_ATTEMPTS = 3  # a batch whose database connection dropped is redone (FCM is idempotent)
DEFAULT_MAX_DEAD = 0.05  # share of a run's work that may be answered "dead" before the guard trips
DEAD_GUARD_MIN = 100  # ...but never fewer than this many
# How long an unconfirmed publish counts as possibly on the wire: well over one send's
# HTTP timeout. While it lasts, no other run may plan the topic.
PUBLISH_IN_FLIGHT_SECONDS = 300.0


@dataclass(frozen=True)
class RunOptions:
    day: dt.date
    prefix: str
    pool_size: int
    audience_path: Path
    message_path: Path
    live: bool = False
    max_churn: float = 0.5
    allow_large_churn: bool = False
    republish: bool = False
    mark_published: bool = False  # an unconfirmed publish did go out: record it, send nothing
    propagation_delay: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    batch_size: int = MAX_TOKENS_PER_CALL
    concurrency: int = DEFAULT_CONCURRENCY
    deadline: float = DEFAULT_DEADLINE  # seconds from the start of the run
    max_dead: float = DEFAULT_MAX_DEAD

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_TOKENS_PER_CALL:
            raise ValueError(f"batch size must be 1 to {MAX_TOKENS_PER_CALL}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 <= self.max_dead <= 1:
            raise ValueError("max dead must be a share between 0 and 1")
        if self.republish and self.mark_published:
            raise ValueError("--republish and --mark-published contradict each other")


class WorkSettings(Protocol):
    """What the drainer needs of a run's (or a repair's) options."""

    @property
    def retry(self) -> RetryPolicy: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def concurrency(self) -> int: ...


class DeadGuard:
    """The blast-radius guard on "dead token" verdicts, shared by a run's workers.

    A real day sees a few uninstalled devices. Thousands of NOT_FOUND or INVALID_ARGUMENT
    answers at once are likelier a wrong project, an API not enabled or credentials for
    another project: past `limit` verdicts, none is believed any more (the tokens stay
    owed, unmarked) and the run stops without publishing.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0
        self.distrusted = 0
        self.tripped = False
        self._lock = threading.Lock()

    @classmethod
    def for_work(cls, share: float, work: int) -> DeadGuard:
        return cls(max(DEAD_GUARD_MIN, math.ceil(share * work)))

    def admit(self, count: int) -> bool:
        """Whether `count` more dead verdicts may be believed (all or none of them)."""
        with self._lock:
            if self.tripped or self.seen + count > self.limit:
                self.tripped = True
                self.distrusted += count
                return False
            self.seen += count
            return True

    def error(self, what: str) -> DeadTokenGuard:
        return DeadTokenGuard(
            f"stopped {what}: FCM answered 'dead token' (not registered, invalid, other "
            f"project) for more than {self.limit} tokens, the dead-token guard's limit "
            f"(--max-dead). That is likelier a systemic fault than uninstalls: a wrong "
            f"Firebase project or credentials for another project, the FCM topic API not "
            f"enabled, or a front end answering for FCM. {self.seen} verdicts were recorded "
            f"before the limit; {self.distrusted} more were not believed and stay owed; "
            "nothing was published. Check the project and credentials, then rerun "
            "(--max-dead 1 accepts the answers)"
        )


def process_owner(what: str) -> str:
    """Who holds a fence, for people: what it is, and which process on which host."""
    return f"{what} (pid {os.getpid()} on {socket.gethostname()})"


@dataclass(frozen=True)
class Progress:
    """Where a sync phase stands, for a progress bar or a log line."""

    op: Op
    done: int
    total: int
    failed: int
    started: float  # monotonic clock


@dataclass
class Deps:
    """What the engine needs from the outside world, passed in for testability."""

    engine: Engine
    client: FcmClient
    sleep: Callable[[float], None]
    now: Callable[[], dt.datetime]
    log: Callable[[str], None] = lambda _msg: None
    pacer: Pacer | None = None
    monotonic: Callable[[], float] = time.monotonic
    progress: Callable[[Progress], None] = lambda _p: None
    # True once a shutdown was asked for: workers stop after their current batch.
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class SyncCounts:
    """Tallies shared by the workers of one run."""

    added: int = 0
    removed: int = 0
    attempts: int = 0  # token attempts, every try counted
    retries: int = 0  # token attempts that were retries
    wait_seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)  # per attempt: "ok" or error code
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


@dataclass
class RunResult:
    status: str  # dry-run | published | already-published
    day: dt.date
    prefix: str
    topic: str
    plan: store.Plan | None = None
    counts: SyncCounts = field(default_factory=SyncCounts)
    failed: dict[str, int] = field(default_factory=dict)
    owed_subscriptions: int = 0
    message_id: str | None = None
    note: str | None = None

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def summary(self) -> dict:
        plan = self.plan
        return {
            "status": self.status,
            "date": self.day.isoformat(),
            "prefix": self.prefix,
            "topic": self.topic,
            "audience": plan.audience_size if plan else None,
            "duplicates": plan.duplicates if plan else None,
            "skipped_invalid": plan.skipped_invalid if plan else None,
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
        }


def run_day(opts: RunOptions, deps: Deps) -> RunResult:
    topic = topic_for(opts.prefix, opts.pool_size, opts.day)
    template = load_message(
        opts.message_path, day=opts.day, collapse_key=opts.prefix, now=deps.now()
    )
    if not opts.live:
        return _dry_run(opts, deps, topic, template)
    with advisory_lock(deps.engine, f"prefix:{opts.prefix}", what="run", log=deps.log) as lock:
        return _live_run(opts, deps, topic, template, lock.verify)


def _guard(opts: RunOptions, plan: store.Plan) -> None:
    """Refuse plans that look like a broken audience rather than a real day."""
    if opts.allow_large_churn:
        return
    usable = plan.audience_size - plan.skipped_invalid
    if usable == 0:
        raise Refused(
            f"the audience has no usable tokens ({plan.audience_size} all invalid or "
            f"forgotten): that would empty {plan.topic}. Pass --allow-large-churn if intended"
        )
    if plan.members_before and plan.churn > opts.max_churn:
        raise Refused(
            f"the audience would remove {plan.newly_removed} of {plan.members_before} members "
            f"of {plan.topic} ({plan.churn:.0%}, over --max-churn {opts.max_churn:.0%}). "
            "Check the audience file, or pass --allow-large-churn if this is intended"
        )


def _plan(opts: RunOptions, conn, topic: str, run_id: int | None) -> store.Plan:
    lines = store.load_audience(conn, iter_audience(opts.audience_path))
    plan = store.plan_topic(conn, topic, run_id, lines)
    _guard(opts, plan)
    return plan


def _dry_run(opts: RunOptions, deps: Deps, topic: str, template: MessageTemplate) -> RunResult:
    with deps.engine.connect() as conn:
        try:
            check_target(conn, deps.client.target, bind=False)
            existing = store.get_run(conn, opts.prefix, opts.day)
            plan = _plan(opts, conn, topic, None)
        finally:
            conn.rollback()
    send_message(deps, opts.retry, template, topic, validate_only=True)
    note = "dry run: nothing changed; pass --live to apply"
    if existing and existing.publish_state == "sent":
        note = "already published; a live run would do nothing"
    return RunResult("dry-run", opts.day, opts.prefix, topic, plan=plan, note=note)


def _live_run(
    opts: RunOptions,
    deps: Deps,
    topic: str,
    template: MessageTemplate,
    verify_lock: Callable[[], None],
) -> RunResult:
    deadline_at = deps.monotonic() + opts.deadline
    with deps.engine.begin() as conn:
        check_target(conn, deps.client.target, bind=False)
        existing = store.get_run(conn, opts.prefix, opts.day)
    if existing and existing.publish_state == "sent":
        return RunResult(
            "already-published",
            opts.day,
            opts.prefix,
            existing.topic,
            message_id=existing.message_id,
            note=f"{opts.day} was already published to {existing.topic}; nothing to do",
        )
    if opts.mark_published:
        return _mark_published(opts, deps, existing)
    if existing and existing.publish_state == "intent" and not opts.republish:
        raise PublishWithheld(
            f"a publish for {opts.day} to {existing.topic} was started but never confirmed "
            "(the process stopped between sending and recording, or FCM's answer proved "
            "nothing). It may have gone out. Check FCM (or the devices): if it went out, "
            "rerun with --mark-published to record it; if not, with --republish to send it"
        )
    send_message(deps, opts.retry, template, topic, validate_only=True)

    with deps.engine.begin() as conn:
        check_target(conn, deps.client.target, bind=True)
        run = store.start_run(
            conn,
            prefix=opts.prefix,
            day=opts.day,
            topic=topic,
            transport=deps.client.transport,
            audience_path=str(opts.audience_path),
        )
        fence = take_fence(conn, topic, process_owner(f"run {opts.prefix} {opts.day}"), run.id)
        plan = _plan(opts, conn, topic, run.id)
        store.save_plan(conn, run.id, plan)
    deps.log(
        f"{topic}: audience {plan.audience_size} ({plan.duplicates} duplicates, "
        f"{plan.skipped_invalid} invalid skipped); {plan.to_remove} to remove, "
        f"{plan.to_add} to add"
    )

    counts = SyncCounts()
    guard = DeadGuard.for_work(opts.max_dead, plan.to_add + plan.to_remove)
    work = Work(deps, topic, run.id, opts, counts, deadline_at, fence.epoch, guard)
    try:
        finished = work.drain(Op.UNSUBSCRIBE, plan.to_remove) and work.drain(
            Op.SUBSCRIBE, plan.to_add
        )
    except TopicSyncError as error:
        _record_stop(deps, run.id, topic, error)
        raise

    with deps.engine.begin() as conn:
        owed_add, owed_remove = store.pending_counts(conn, topic)
        failed = store.settle_failures(conn, run.id)
        stopped = deps.should_stop()
        if not finished:
            why = "stopped on request" if stopped else "deadline reached"
            note = f"{why}: {owed_remove} removals and {owed_add} additions on {topic} still owed"
            store.finish_run(conn, run.id, "interrupted" if stopped else "deadline", note)
        elif owed_remove:
            sample = store.pending_sample(conn, topic, PENDING[Op.UNSUBSCRIBE], BLOCKING_SAMPLE)
            note = f"{owed_remove} removals from {topic} unconfirmed"
            store.finish_run(conn, run.id, "withheld", note)
    if not finished and stopped:
        raise Interrupted(
            f"stopped on request before {opts.day} was finished: {owed_remove} removals and "
            f"{owed_add} additions on {topic} still owed, nothing published. Everything "
            "confirmed is recorded; rerun this date to resume"
        )
    if not finished:
        raise DeadlineReached(
            f"not publishing {opts.day}: the run's deadline ({opts.deadline:g}s) passed with "
            f"{owed_remove} removals and {owed_add} additions on {topic} still owed. Rerun "
            "this date (or run 'topic-sync reconcile') to continue where it stopped"
        )
    if owed_remove:
        shown = ", ".join(sample) + (" …" if owed_remove > len(sample) else "")
        raise PublishWithheld(
            f"not publishing {opts.day}: {owed_remove} tokens may still be subscribed to {topic} "
            f"and would receive a message not meant for them: {shown}. "
            "Run 'topic-sync reconcile' (or rerun this date) once FCM recovers"
        )

    if opts.propagation_delay > 0:
        deps.log(f"waiting {opts.propagation_delay:g}s for subscriptions to propagate")
        deps.sleep(opts.propagation_delay)
    if deps.should_stop():
        with deps.engine.begin() as conn:
            store.finish_run(conn, run.id, "interrupted", "stopped on request before publishing")
        raise Interrupted(
            f"stopped on request before publishing {opts.day}; the sync is complete: "
            "rerun this date to publish"
        )
    verify_lock()
    try:
        message_id = publish_once(
            deps,
            run.id,
            template,
            topic,
            republish=opts.republish,
            policy=opts.retry,
            epoch=fence.epoch,
        )
    except (Fenced, PublishWithheld) as error:
        _record_stop(deps, run.id, topic, error)
        raise
    result = RunResult(
        "published" if message_id else "already-published",
        opts.day,
        opts.prefix,
        topic,
        plan=plan,
        counts=counts,
        failed=failed,
        owed_subscriptions=owed_add,
        message_id=message_id,
    )
    if owed_add:
        result.note = (
            f"{owed_add} tokens could not be subscribed and missed today's message; "
            "see 'topic-sync report'"
        )
    return result


def _mark_published(opts: RunOptions, deps: Deps, existing: store.RunRecord | None) -> RunResult:
    """The operator checked: the unconfirmed publish did go out. Record it; send nothing."""
    if existing is None or existing.publish_state != "intent":
        raise BadInput(
            f"--mark-published: {opts.day} has no unconfirmed publish to record "
            f"(publish state: {existing.publish_state if existing else 'no run'})"
        )
    with deps.engine.begin() as conn:
        store.confirm_publish(conn, existing.id, None, note="recorded as sent by an operator")
    return RunResult(
        "already-published",
        opts.day,
        opts.prefix,
        existing.topic,
        note=f"{opts.day}'s publish to {existing.topic} recorded as sent (--mark-published)",
    )


def send_message(
    deps: Deps,
    policy: RetryPolicy,
    template: MessageTemplate,
    topic: str,
    *,
    validate_only: bool = False,
) -> str:
    """One send (or validation), retried on FCM's quota and server errors per the policy."""
    for attempt in policy.retrying(
        retryable=lambda e: isinstance(e, PublishError) and e.retryable,
        sleep=deps.sleep,
        retry_after=lambda e: getattr(e, "retry_after", None),
    ):
        with attempt:
            message_id = deps.client.publish(template.to_sdk(topic), validate_only=validate_only)
    return message_id


def publish_once(
    deps: Deps,
    run_id: int,
    template: MessageTemplate,
    topic: str,
    *,
    republish: bool,
    policy: RetryPolicy,
    epoch: int,
) -> str | None:
    """Send the day's message unless someone already has. Returns its id, or None.

    Before every attempt, one transaction proves the topic is still this run's (the
    fence), that no removal from it is owed, and stamps the intent: an intent is always
    recorded before the message can leave, and another planner waits while it is fresh.
    """
    with deps.engine.begin() as conn:
        _check_fence(conn, topic, epoch, "this run")
        _check_no_owed_removals(conn, topic)
        if not store.claim_publish(conn, run_id, republish=republish):
            return None
    first = True
    try:
        for attempt in policy.retrying(
            retryable=lambda e: isinstance(e, PublishError) and e.retryable,
            sleep=deps.sleep,
            retry_after=lambda e: getattr(e, "retry_after", None),
        ):
            with attempt:
                if not first:
                    with deps.engine.begin() as conn:
                        _check_fence(conn, topic, epoch, "this run")
                        _check_no_owed_removals(conn, topic)
                        store.refresh_publish_intent(conn, run_id)
                first = False
                message_id = deps.client.publish(template.to_sdk(topic))
    except CredentialsError as error:
        with deps.engine.begin() as conn:  # refused: it did not go out
            store.release_publish(conn, run_id, error.message)
        raise
    except PublishError as error:
        if error.definitely_not_sent:
            with deps.engine.begin() as conn:
                store.release_publish(conn, run_id, error.message)
            raise
        with deps.engine.begin() as conn:
            store.finish_run(conn, run_id, "publishing", f"publish unconfirmed: {error.message}")
        raise PublishWithheld(
            f"the publish to {topic} got an answer that does not prove FCM did not take it "
            f"({error.message}). It may have gone out. Check FCM (or the devices), then "
            "rerun with --republish to send it again"
        ) from error
    with deps.engine.begin() as conn:
        store.confirm_publish(conn, run_id, message_id)
    deps.log(f"published to {topic}: {message_id}")
    return message_id


def take_fence(conn, topic: str, owner: str, run_id: int | None) -> store.Fence:
    """Plan the topic: refuse while another run's publish to it may be on the wire."""
    fence = store.take_fence(conn, topic, owner, run_id)
    busy = store.publish_in_flight(conn, topic, run_id, PUBLISH_IN_FLIGHT_SECONDS)
    if busy is not None:
        raise Locked(
            f"{topic}: the publish of {busy.prefix} {busy.run_date} (run #{busy.id}) is not "
            "confirmed and may still be in flight; not changing the topic under it. Try again "
            f"in {PUBLISH_IN_FLIGHT_SECONDS / 60:g} minutes"
        )
    return fence


def _check_fence(conn, topic: str, epoch: int, who: str) -> None:
    fence = store.read_fence(conn, topic)
    if fence is None or fence.epoch != epoch:
        owner = fence.owner if fence else "somebody"
        raise Fenced(
            f"{topic} was planned again by {owner} after {who} planned it (its lock had been "
            "lost, e.g. a dropped database connection). Stopped without publishing, so as not "
            "to act on a stale plan; rerun to plan again"
        )


def _check_no_owed_removals(conn, topic: str) -> None:
    """What changed since the sync finished: a removal queued meanwhile (forget) blocks."""
    owed = store.pending_counts(conn, topic)[1]
    if owed:
        raise PublishWithheld(
            f"not publishing: {owed} removals from {topic} became owed since the sync "
            "finished (e.g. 'topic-sync forget'); run 'topic-sync reconcile --live', then "
            "rerun this date"
        )


def _record_stop(deps: Deps, run_id: int, topic: str, error: TopicSyncError) -> None:
    """Say on the run's record why it ended, so it does not look still in progress.

    A run fenced out by another process of the same run leaves the record to that one.
    """
    status = "failed"
    if isinstance(error, Fenced):
        status = "fenced"
    elif isinstance(error, DeadTokenGuard):
        status = "guarded"
    elif isinstance(error, PublishWithheld):
        status = "withheld"
    with deps.engine.begin() as conn:
        if isinstance(error, Fenced):
            fence = store.read_fence(conn, topic, lock=False)
            if fence is not None and fence.run_id == run_id:
                return
        store.settle_failures(conn, run_id)
        store.finish_run(conn, run_id, status, error.message)


class Work:
    """Drains a topic's pending rows with several workers, retrying per the policy.

    Each worker claims its own batch (SKIP LOCKED), so one slow FCM call stalls one
    worker, not the run. Retryable tokens are re-batched in rounds; between rounds
    the retry policy's backoff (and any Retry-After) is waited in full.
    """

    def __init__(
        self,
        deps: Deps,
        topic: str,
        run_id: int | None,
        opts: WorkSettings,
        counts: SyncCounts,
        deadline_at: float,
        epoch: int,
        guard: DeadGuard,
    ) -> None:
        self.deps, self.topic, self.run_id, self.opts = deps, topic, run_id, opts
        self.counts, self.deadline_at = counts, deadline_at
        self.epoch, self.guard = epoch, guard
        self._retry_after = 0.0
        self._done = self._failed = 0
        self._started = deps.monotonic()

    def drain(self, op: Op, total: int) -> bool:
        """Work off one operation; False if the deadline stopped it with work left."""
        deps, policy = self.deps, self.opts.retry
        self._done = self._failed = 0
        self._started = deps.monotonic()
        for retry_number in range(policy.max_retries + 1):
            if deps.should_stop():
                return self._owed(op) == 0
            if retry_number:
                owed = self._owed(op)
                if not owed:
                    return True
                hold = deps.pacer.hold_remaining() if deps.pacer else 0.0
                wait = policy.wait(retry_number, max(hold, self._retry_after) or None)
                if deps.monotonic() + wait > self.deadline_at:
                    return False
                deps.log(f"{op}: {owed} tokens to retry (retry {retry_number}) in {wait:.1f}s")
                deps.sleep(wait)
                if deps.should_stop():
                    return False
                self._retry_after = 0.0
                with self.counts.lock:
                    self.counts.wait_seconds += wait
                if self.run_id is not None:
                    with deps.engine.begin() as conn:
                        store.add_progress(conn, self.run_id, wait_seconds=wait)
            if not self._round(op, total, retrying=retry_number > 0):
                return self._owed(op) == 0
        return True

    def _owed(self, op: Op) -> int:
        with self.deps.engine.begin() as conn:
            return store.pending_counts(conn, self.topic)[0 if op is Op.SUBSCRIBE else 1]

    def _round(self, op: Op, total: int, *, retrying: bool) -> bool:
        """One pass over every pending row; False if the deadline cut it short."""
        with self.deps.engine.begin() as conn:
            round_start = store.db_now(conn)
        stop = threading.Event()
        cut_short = threading.Event()

        def worker() -> None:
            try:
                while not stop.is_set():
                    if self.deps.monotonic() >= self.deadline_at or self.deps.should_stop():
                        cut_short.set()
                        return
                    if not self._batch(op, round_start, total, retrying=retrying):
                        return
            except BaseException:
                stop.set()
                raise

        with ThreadPoolExecutor(self.opts.concurrency, thread_name_prefix="sync") as pool:
            futures = [pool.submit(worker) for _ in range(self.opts.concurrency)]
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return not cut_short.is_set()

    def _batch(self, op: Op, round_start: dt.datetime, total: int, *, retrying: bool) -> bool:
        """One batch, redone if its database connection drops; False when none is left."""
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_disconnect),
            stop=tenacity.stop_after_attempt(DB_ATTEMPTS),
            wait=tenacity.wait_fixed(0.2),
            reraise=True,
        ):
            with attempt:
                tally = _one_batch(
                    self.deps,
                    self.topic,
                    op,
                    self.run_id,
                    round_start,
                    self.opts.batch_size,
                    retrying=retrying,
                    epoch=self.epoch,
                    guard=self.guard,
                )
        if tally is None:
            return False
        with self.counts.lock:
            if op is Op.SUBSCRIBE:
                self.counts.added += tally.confirmed
            else:
                self.counts.removed += tally.confirmed
            self.counts.attempts += tally.attempts
            self.counts.retries += tally.attempts if retrying else 0
            self.counts.outcomes.update(tally.outcomes)
            self._retry_after = max(self._retry_after, tally.retry_after or 0.0)
            # Progress counts tokens settled (done or failed for good) out of the plan.
            self._done += tally.settled
            self._failed += tally.failed - (tally.confirmed if retrying else 0)
            event = Progress(op, self._done, total, max(self._failed, 0), self._started)
        self.deps.progress(event)
        return True


@dataclass(frozen=True)
class BatchTally:
    attempts: int
    confirmed: int  # now in the state the operation wanted
    settled: int  # confirmed, or failed for good
    failed: int  # failed this attempt (retryable or permanent)
    outcomes: Counter  # "ok" or error code, per token
    retry_after: float | None


def _one_batch(
    deps: Deps,
    topic: str,
    op: Op,
    run_id: int | None,
    round_start: dt.datetime,
    limit: int,
    *,
    retrying: bool,
    epoch: int,
    guard: DeadGuard,
) -> BatchTally | None:
    """Claim, call FCM, record: one transaction that commits only after FCM answered.

    The transaction first checks (and holds, FOR SHARE) the topic's fence: nobody may
    plan the topic while the batch is in flight, and a batch of a stale plan never runs.
    """
    stop_reason = None
    with deps.engine.begin() as conn:
        _check_fence(conn, topic, epoch, "this run" if run_id is not None else "this repair")
        rows = store.claim_batch(conn, topic, PENDING[op], round_start, limit)
        if not rows:
            return None
        tokens = [token for _, token in rows]
        call = deps.client.subscribe if op is Op.SUBSCRIBE else deps.client.unsubscribe
        result = call(tokens, topic)
        outcomes = []
        for (token_id, _), reason, proven in zip(rows, result.reasons, result.proven, strict=True):
            outcome = _map(token_id, reason, op, proven=proven)
            if outcome is None:
                stop_reason = reason
                continue
            outcomes.append(outcome)
        dead = sum(1 for o in outcomes if o.invalid)
        if dead and not guard.admit(dead):
            outcomes = [o.distrusted(PENDING[op]) if o.invalid else o for o in outcomes]
        store.record_outcomes(conn, topic, op.value, run_id, outcomes)
        confirmed = sum(1 for o in outcomes if o.status == CONFIRMED[op])
        codes = Counter(o.code or "ok" for o in outcomes)
        if run_id is not None:
            store.add_progress(
                conn,
                run_id,
                added=confirmed if op is Op.SUBSCRIBE else 0,
                removed=confirmed if op is Op.UNSUBSCRIBE else 0,
                attempts=len(outcomes),
                retries=len(outcomes) if retrying else 0,
                outcomes=dict(codes),
            )
    if stop_reason is not None:
        raise CredentialsError(CREDENTIALS_HELP.format(reason=stop_reason))
    if guard.tripped:
        raise guard.error("syncing " + topic)
    settled = sum(1 for o in outcomes if o.status != PENDING[op])
    return BatchTally(
        attempts=len(outcomes),
        confirmed=confirmed,
        settled=settled,
        failed=sum(1 for o in outcomes if o.failed),
        outcomes=codes,
        retry_after=result.retry_after,
    )


def _map(token_id: int, reason: str | None, op: Op, *, proven: bool) -> store.TokenOutcome | None:
    """One token's FCM answer through the error table; None means stop the run."""
    if reason is None:
        return store.TokenOutcome(token_id, CONFIRMED[op], None, None, False, False)
    rule = rule_for(reason, op, proven=proven)
    outcome = rule.outcome(op)
    if outcome is Outcome.STOP:
        return None
    if outcome is Outcome.SUCCESS:
        return store.TokenOutcome(
            token_id, CONFIRMED[op], rule.code, reason, False, rule.marks_invalid
        )
    if outcome is Outcome.PERMANENT and op is Op.SUBSCRIBE:
        # FCM did not subscribe it and never will: the topic does not hold it.
        return store.TokenOutcome(
            token_id, CONFIRMED[Op.UNSUBSCRIBE], rule.code, reason, True, rule.marks_invalid
        )
    return store.TokenOutcome(token_id, PENDING[op], rule.code, reason, True, False)
