"""Repairs: finish what runs left owed, re-assert FCM from the table, audit FCM.

Reconcile never publishes. It uses the same batches, transactions, retry policy,
pacing and error table as `run` (the `Work` drainer), and the same per-campaign
lock, so it never runs alongside a run of the same campaign. Without `live` it
only reports what it would do (an audit still reads from FCM: reads change nothing).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from topic_sync import store
from topic_sync.engine.drain import DeadGuard, Work, process_owner, take_fence
from topic_sync.engine.retry import RetryPolicy
from topic_sync.engine.target import check_target
from topic_sync.engine.types import Deps, SyncCounts
from topic_sync.fcm.client import ListError
from topic_sync.fcm.error_table import Op
from topic_sync.fcm.wire import MAX_TOKENS_PER_CALL
from topic_sync.pool import prefix_of
from topic_sync.states import SubscriptionStatus
from topic_sync.store.db import advisory_lock, campaign_lock

AUDIT_WORKERS = 32
DRIFT_SHOWN = 1000  # drift lines kept for display; counts are always complete
AUDIT_PAGE = 1000  # tokens an audit holds in memory at once


@dataclass(frozen=True, kw_only=True)
class ReconcileOptions:
    """What a repair is told, as plain values (the application layer fills those named as
    settings from the resolved settings)."""

    topics: tuple[str, ...]
    live: bool = False
    full: bool = False
    audit: bool = False
    sample: int | None = None
    retry: RetryPolicy
    batch_size: int = MAX_TOKENS_PER_CALL
    concurrency: int
    deadline: float
    max_dead: float


@dataclass(frozen=True)
class Drift:
    token: str
    topic: str
    in_fcm: bool  # True: FCM holds it, the table says it should not; False: the reverse


@dataclass
class TopicReport:
    topic: str
    owed_add: int = 0
    owed_remove: int = 0
    stale: int = 0
    full_add: int = 0
    full_remove: int = 0
    added: int = 0
    removed: int = 0
    left_add: int = 0
    left_remove: int = 0


@dataclass
class ReconcileResult:
    live: bool
    topics: list[TopicReport]
    audited: int = 0
    unknown_tokens: int = 0  # FCM does not know them at all (dead)
    drift_in_fcm: int = 0
    drift_missing: int = 0
    drift: list[Drift] = field(default_factory=list)
    counts: SyncCounts = field(default_factory=SyncCounts)
    finished: bool = True

    def summary(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "finished": self.finished,
            "audited": self.audited,
            "unknown_tokens": self.unknown_tokens,
            "drift": {
                "in_fcm_not_in_table": self.drift_in_fcm,
                "in_table_not_in_fcm": self.drift_missing,
            },
            "topics": [vars(t) for t in self.topics],
            "attempts": self.counts.attempts,
            "retries": self.counts.retries,
            "outcomes": dict(self.counts.outcomes),
        }


def reconcile(opts: ReconcileOptions, deps: Deps) -> ReconcileResult:
    """Repair the topics, campaign by campaign under the lock its runs take."""
    with deps.engine.connect() as conn:
        owners = store.campaigns_of_topics(conn, {topic: prefix_of(topic) for topic in opts.topics})
    by_lock: dict[str, list[str]] = defaultdict(list)
    for topic in opts.topics:
        owner = owners.get(topic)
        by_lock[campaign_lock(owner.name if owner else prefix_of(topic))].append(topic)
    result = ReconcileResult(live=opts.live, topics=[])
    deadline_at = deps.monotonic() + opts.deadline
    for lock_name, topics in sorted(by_lock.items()):
        with advisory_lock(deps.engine, lock_name, what="run or reconcile", log=deps.log):
            _reconcile_prefix(opts, deps, topics, result, deadline_at)
    return result


def _reconcile_prefix(
    opts: ReconcileOptions,
    deps: Deps,
    topics: list[str],
    result: ReconcileResult,
    deadline_at: float,
) -> None:
    reports = {topic: TopicReport(topic) for topic in topics}
    epochs: dict[str, int] = {}
    with deps.engine.begin() as conn:
        check_target(conn, deps.client.target, bind=opts.live)
        if opts.live:
            # A repair changes the topics' rows: a run that lost its lock must not go on
            # with a plan made before it, so the repair takes every topic's fence.
            owner = process_owner("reconcile")
            for topic in topics:
                epochs[topic] = take_fence(conn, topic, owner, None).epoch
        for topic, report in reports.items():
            report.owed_add, report.owed_remove = store.pending_counts(conn, topic)
            report.stale = store.stale_members(conn, [topic])
            if opts.full:
                report.full_add, report.full_remove = store.confirmed_counts(conn, topic)
        if opts.live:
            store.queue_stale_removals(conn, topics)
            if opts.full:
                for topic in topics:
                    store.queue_full_reassert(conn, topic)
            store.refresh_statistics(conn)
    if opts.audit:
        _audit(opts, deps, topics, result)
    if opts.live:
        owed = sum(
            r.owed_add + r.owed_remove + r.stale + r.full_add + r.full_remove
            for r in reports.values()
        )
        guard = DeadGuard.for_work(opts.max_dead, owed)
        for topic, report in reports.items():
            # A repair has no runs row: its counts are tallied in memory, in result.counts.
            work = Work(deps, topic, opts, deadline_at, epochs[topic], guard, tally=result.counts)
            removed_before, added_before = result.counts.removed, result.counts.added
            done = work.drain_all(
                [
                    (Op.UNSUBSCRIBE, report.owed_remove + report.stale),
                    (Op.SUBSCRIBE, report.owed_add),
                ]
            )
            result.finished = result.finished and done
            report.removed = result.counts.removed - removed_before
            report.added = result.counts.added - added_before
    with deps.engine.begin() as conn:
        for topic, report in reports.items():
            report.left_add, report.left_remove = store.pending_counts(conn, topic)
    result.topics.extend(reports.values())


def _audit(opts: ReconcileOptions, deps: Deps, topics: list[str], result: ReconcileResult) -> None:
    """Ask FCM what it holds for each token and compare with the table, per pool topic.

    Page by page (AUDIT_PAGE tokens): memory stays flat however many tokens the topics
    hold, and with `live` each page's heals are queued before the next page is read.
    """
    scope = set(topics)

    def look(token: str) -> set[str] | None:
        for attempt in opts.retry.retrying(
            retryable=lambda e: isinstance(e, ListError) and e.retryable and not e.not_found,
            sleep=deps.sleep,
            retry_after=lambda e: getattr(e, "retry_after", None),
        ):
            with attempt:
                try:
                    return deps.client.list_topics(token) & scope
                except ListError as error:
                    if error.not_found:
                        return None
                    raise
        return None  # pragma: no cover - Retrying re-raises

    only = None
    if opts.sample is not None:
        with deps.engine.begin() as conn:
            only = store.audit_sample(conn, topics, opts.sample)
    started, after = time.monotonic(), 0
    with ThreadPoolExecutor(AUDIT_WORKERS, thread_name_prefix="audit") as pool:
        while True:
            with deps.engine.begin() as conn:
                page = store.audit_page(conn, topics, after=after, limit=AUDIT_PAGE, only=only)
            if not page:
                break
            after = page[-1][0]
            held = pool.map(look, (token for _, token, _ in page))
            heals = _compare(topics, page, held, result)
            if opts.live and heals:
                with deps.engine.begin() as conn:
                    store.queue_heals(conn, heals)
    deps.log(f"audited {result.audited} tokens in {time.monotonic() - started:.1f}s")


def _compare(
    topics: list[str],
    page: list[tuple[int, str, dict[str, str]]],
    held: Iterable[set[str] | None],
    result: ReconcileResult,
) -> list[tuple[str, str, str]]:
    """Count one page's drift both ways; return the heals it calls for."""
    heals: list[tuple[str, str, str]] = []
    for (_, token, states), fcm_topics in zip(page, held, strict=True):
        result.audited += 1
        if fcm_topics is None:
            result.unknown_tokens += 1
            fcm_topics = set()
        for topic in topics:
            status = states.get(topic)
            if status is not None and SubscriptionStatus(status).pending:
                continue  # owed work: reconcile is about to settle it anyway
            expected = status == SubscriptionStatus.SUBSCRIBED
            actual = topic in fcm_topics
            if expected == actual:
                continue
            if actual:
                result.drift_in_fcm += 1
            else:
                result.drift_missing += 1
            if len(result.drift) < DRIFT_SHOWN:
                result.drift.append(Drift(token, topic, in_fcm=actual))
            owed = (
                SubscriptionStatus.PENDING_UNSUBSCRIBE
                if actual
                else SubscriptionStatus.PENDING_SUBSCRIBE
            )
            heals.append((token, topic, owed.value))
    return heals


def forget(deps: Deps, tokens: Iterable[str], *, live: bool) -> tuple[int, int, list[str]]:
    """Mark tokens gone; returns (marked, removals queued, topics now owing work). Without
    `live`, the same counts from a transaction that is rolled back: nothing changes."""
    with deps.engine.connect() as conn:
        check_target(conn, deps.client.target, bind=False)
        marked, queued = store.forget_tokens(conn, tokens)
        owing = store.topics_owing(conn)
        (conn.commit if live else conn.rollback)()
    return marked, queued, owing


def unforget(deps: Deps, tokens: Iterable[str], *, live: bool) -> tuple[int, int]:
    """Undo forget: later audiences include the tokens again, and the removals the forget
    queued that are still owed are lifted. Returns (tokens that were forgotten, removals
    lifted); without `live`, counted in a transaction that is rolled back."""
    with deps.engine.connect() as conn:
        check_target(conn, deps.client.target, bind=False)
        counts = store.unforget_tokens(conn, tokens)
        (conn.commit if live else conn.rollback)()
    return counts
