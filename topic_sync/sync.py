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
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from topic_sync import store
from topic_sync.audience import iter_audience
from topic_sync.db import advisory_lock
from topic_sync.error_table import Op, Outcome, classify
from topic_sync.errors import CredentialsError, ExitCode, PublishWithheld, Refused
from topic_sync.fcm import CREDENTIALS_HELP, MAX_TOKENS_PER_CALL, FcmClient, PublishError
from topic_sync.message import MessageTemplate, load_message
from topic_sync.retry import RetryPolicy
from topic_sync.topics import topic_for

CONFIRMED = {Op.SUBSCRIBE: "subscribed", Op.UNSUBSCRIBE: "unsubscribed"}
PENDING = {Op.SUBSCRIBE: "pending_subscribe", Op.UNSUBSCRIBE: "pending_unsubscribe"}
BLOCKING_SAMPLE = 10


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
    propagation_delay: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    batch_size: int = MAX_TOKENS_PER_CALL

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_TOKENS_PER_CALL:
            raise ValueError(f"batch size must be 1 to {MAX_TOKENS_PER_CALL}")


@dataclass
class Deps:
    """What the engine needs from the outside world, passed in for testability."""

    engine: Engine
    client: FcmClient
    sleep: Callable[[float], None]
    now: Callable[[], dt.datetime]
    log: Callable[[str], None] = lambda _msg: None


@dataclass
class SyncCounts:
    added: int = 0
    removed: int = 0
    attempts: int = 0
    retries: int = 0
    wait_seconds: float = 0.0


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
    with advisory_lock(deps.engine, f"prefix:{opts.prefix}", what="run"):
        return _live_run(opts, deps, topic, template)


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
            existing = store.get_run(conn, opts.prefix, opts.day)
            plan = _plan(opts, conn, topic, None)
        finally:
            conn.rollback()
    deps.client.publish(template.to_sdk(topic), validate_only=True)
    note = "dry run: nothing changed; pass --live to apply"
    if existing and existing.publish_state == "sent":
        note = "already published; a live run would do nothing"
    return RunResult("dry-run", opts.day, opts.prefix, topic, plan=plan, note=note)


def _live_run(opts: RunOptions, deps: Deps, topic: str, template: MessageTemplate) -> RunResult:
    with deps.engine.begin() as conn:
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
    if existing and existing.publish_state == "intent" and not opts.republish:
        raise PublishWithheld(
            f"a publish for {opts.day} to {existing.topic} was started but never confirmed "
            "(the process stopped between sending and recording). It may have gone out. "
            "Check FCM, then rerun with --republish to send it again"
        )
    deps.client.publish(template.to_sdk(topic), validate_only=True)

    with deps.engine.begin() as conn:
        run = store.start_run(
            conn,
            prefix=opts.prefix,
            day=opts.day,
            topic=topic,
            transport=deps.client.transport,
            audience_path=str(opts.audience_path),
        )
        plan = _plan(opts, conn, topic, run.id)
        store.save_plan(conn, run.id, plan)
    deps.log(
        f"{topic}: audience {plan.audience_size} ({plan.duplicates} duplicates, "
        f"{plan.skipped_invalid} invalid skipped); {plan.to_remove} to remove, "
        f"{plan.to_add} to add"
    )

    counts = SyncCounts()
    for op in (Op.UNSUBSCRIBE, Op.SUBSCRIBE):
        drain(deps, topic, op, run.id, opts.retry, opts.batch_size, counts)

    with deps.engine.begin() as conn:
        owed_add, owed_remove = store.pending_counts(conn, topic)
        failed = store.settle_failures(conn, run.id)
        if owed_remove:
            sample = store.pending_sample(conn, topic, PENDING[Op.UNSUBSCRIBE], BLOCKING_SAMPLE)
            note = f"{owed_remove} removals from {topic} unconfirmed"
            store.finish_run(conn, run.id, "withheld", note)
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
    message_id = publish_once(deps, run.id, template, topic, republish=opts.republish)
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


def publish_once(
    deps: Deps, run_id: int, template: MessageTemplate, topic: str, *, republish: bool
) -> str | None:
    """Send the day's message unless someone already has. Returns its id, or None."""
    with deps.engine.begin() as conn:
        if not store.claim_publish(conn, run_id, republish=republish):
            return None
    try:
        message_id = deps.client.publish(template.to_sdk(topic))
    except PublishError as error:
        if error.definitely_not_sent:
            with deps.engine.begin() as conn:
                store.release_publish(conn, run_id, error.message)
        raise
    with deps.engine.begin() as conn:
        store.confirm_publish(conn, run_id, message_id)
    deps.log(f"published to {topic}: {message_id}")
    return message_id


def drain(
    deps: Deps,
    topic: str,
    op: Op,
    run_id: int | None,
    policy: RetryPolicy,
    batch_size: int,
    counts: SyncCounts,
) -> None:
    """Work off a topic's pending rows for one operation, retrying per the policy."""
    retry_after: float | None = None
    for retry_number in range(policy.max_retries + 1):
        if retry_number:
            with deps.engine.begin() as conn:
                owed = store.pending_counts(conn, topic)[0 if op is Op.SUBSCRIBE else 1]
            if not owed:
                return
            wait = policy.wait(retry_number, retry_after)
            deps.log(f"{op}: {owed} tokens to retry (retry {retry_number}) in {wait:.1f}s")
            deps.sleep(wait)
            counts.wait_seconds += wait
            counts.retries += owed
            with deps.engine.begin() as conn:
                store.add_progress(conn, run_id, retries=owed, wait_seconds=wait)
            retry_after = None
        with deps.engine.begin() as conn:
            round_start = store.db_now(conn)
        while True:
            done, batch_retry_after = _one_batch(deps, topic, op, run_id, round_start, batch_size)
            if done is None:
                break
            if batch_retry_after is not None:
                retry_after = max(retry_after or 0.0, batch_retry_after)
            if op is Op.SUBSCRIBE:
                counts.added += done
            else:
                counts.removed += done
            counts.attempts += 1


def _one_batch(
    deps: Deps, topic: str, op: Op, run_id: int | None, round_start: dt.datetime, limit: int
) -> tuple[int | None, float | None]:
    """Claim, call FCM, record: one transaction. Returns (confirmed count, Retry-After)."""
    stop_reason = None
    with deps.engine.begin() as conn:
        rows = store.claim_batch(conn, topic, PENDING[op], round_start, limit)
        if not rows:
            return None, None
        tokens = [token for _, token in rows]
        call = deps.client.subscribe if op is Op.SUBSCRIBE else deps.client.unsubscribe
        result = call(tokens, topic)
        outcomes = []
        for (token_id, _), reason in zip(rows, result.reasons, strict=True):
            outcome = _map(token_id, reason, op)
            if outcome is None:
                stop_reason = reason
                continue
            outcomes.append(outcome)
        store.record_outcomes(conn, topic, op.value, run_id, outcomes)
        confirmed = sum(1 for o in outcomes if o.status == CONFIRMED[op])
        if run_id is not None:
            store.add_progress(
                conn,
                run_id,
                added=confirmed if op is Op.SUBSCRIBE else 0,
                removed=confirmed if op is Op.UNSUBSCRIBE else 0,
                attempts=len(rows),
            )
    if stop_reason is not None:
        raise CredentialsError(CREDENTIALS_HELP.format(reason=stop_reason))
    return confirmed, result.retry_after


def _map(token_id: int, reason: str | None, op: Op) -> store.TokenOutcome | None:
    """One token's FCM answer through the error table; None means stop the run."""
    if reason is None:
        return store.TokenOutcome(token_id, CONFIRMED[op], None, None, False, False)
    rule = classify(reason)
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
