"""The batch drainer runs and repairs share: claim a batch, ask FCM, record, in one transaction.

Pending subscription rows are the work queue. Each worker claims its own batch
(`FOR UPDATE SKIP LOCKED`), checks the topic's fence, calls FCM and records every token's
outcome in one transaction that commits only after FCM answered, so a crash anywhere
loses nothing and a rerun redoes at most one batch (FCM's calls are idempotent).
Retryable tokens are re-batched in rounds under the retry policy, until the deadline.
Only an answer about a token settles it (error_table.rule_for), and the dead-token guard
refuses to believe a flood of "dead" answers. A bare v1 404 NOT_FOUND (no FCM details) is
believed only on an endpoint proven by this run's own per-token successes (DeadGuard).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import tenacity
from sqlalchemy import Connection

from topic_sync import store
from topic_sync.engine.retry import RetryPolicy
from topic_sync.engine.types import Deps, Progress, SyncCounts
from topic_sync.errors import CredentialsError, DeadTokenGuard, Fenced, Locked
from topic_sync.fcm.answers import UNEXPECTED_ANSWER
from topic_sync.fcm.client import CREDENTIALS_HELP, BatchResult
from topic_sync.fcm.error_table import RATE_LIMITED, Outcome, rule_for
from topic_sync.states import Op, SubscriptionStatus
from topic_sync.store.db import is_disconnect

DB_ATTEMPTS = 3  # a batch whose database connection dropped is redone (FCM is idempotent)
DEAD_GUARD_MIN = 100  # the dead-token guard never trips below this many verdicts
# How long an unconfirmed publish counts as possibly on the wire: well over one send's
# HTTP timeout. While it lasts, no other run may plan the topic.
PUBLISH_IN_FLIGHT_SECONDS = 300.0
# The longest one batch may spend on FCM (well under the database's idle-in-transaction
# timeout, store.db.IDLE_IN_TRANSACTION_TIMEOUT_MS); what is not sent by then is retried.
BATCH_BUDGET_SECONDS = 600.0


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

    It also keeps the run's proof that the v1 endpoint answers per token: how many proven
    per-token successes each operation has recorded. A bare 404 NOT_FOUND (Google's error
    without FCM's details: the Python SDK suite's per-token fixture, but also what a front
    end answers for a route it does not know, or an API not enabled) is a verdict about its
    token only once the same run has recorded such a success for the same operation, in an
    earlier batch; and it counts against the limit like any "dead" answer.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0
        self.distrusted = 0
        self.tripped = False
        self._lock = threading.Lock()
        self._successes: Counter[Op] = Counter()

    def endpoint_proven(self, op: Op) -> bool:
        """Whether `op` has been answered with a proven per-token success in this run."""
        with self._lock:
            return self._successes[op] > 0

    def prove_endpoint(self, op: Op, successes: int) -> None:
        """Count proven per-token successes of `op` (FCM's documented success shape)."""
        with self._lock:
            self._successes[op] += successes

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


def take_fence(conn: Connection, topic: str, owner: str, run_id: int | None) -> store.Fence:
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


def check_fence(conn: Connection, topic: str, epoch: int, who: str) -> None:
    fence = store.read_fence(conn, topic)
    if fence is None or fence.epoch != epoch:
        owner = fence.owner if fence else "somebody"
        raise Fenced(
            f"{topic} was planned again by {owner} after {who} planned it (its lock had been "
            "lost, e.g. a dropped database connection). Stopped without publishing, so as not "
            "to act on a stale plan; rerun to plan again"
        )


class ClaimCursor:
    """A round's claims, one at a time, each past the highest token id the round claimed.

    Claims take rows in token order, so the rows before the cursor are done, in flight, or
    were skipped (held by another process) or given back (a batch rolled back). The cursor
    is a hint: a claim past it that finds nothing claims from the start once more, so the
    round still takes every row it owes, and only its last claims walk the rows done.

    The workers of one round claim in turn. Claimed side by side, two statements lock rows
    of the same stretch between them (SKIP LOCKED passes over each other's rows), and a
    topic owing one batch went out as two requests, one of a token or a few. In turn, each
    claim sees the rows the one before locked and takes the next full batch. A claim holds
    the turn only for its statement (no row lock is waited on), never while FCM answers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._after = 0

    def claim(
        self,
        conn: Connection,
        topic: str,
        status: SubscriptionStatus,
        round_start: dt.datetime,
        limit: int,
    ) -> list[tuple[int, str]]:
        with self._lock:
            rows = store.claim_batch(conn, topic, status, round_start, limit, self._after)
            if not rows and self._after:
                rows = store.claim_batch(conn, topic, status, round_start, limit)
            if rows:
                self._after = max(self._after, rows[-1][0])
            return rows


# How often a batch asks again, at once and paced, about its tokens FCM answered 429 before
# it ends: left to a retry round, they would be asked only after every other batch of the
# pass, and the day's last of them would make its tail (a round's claims, a request's
# latency, its record: a quarter of a second, 8% of a 3-second day at FCM's quota).
REASKS = 2
# A wait FCM asked for (Retry-After, RetryInfo) up to this long is waited within the batch
# before it asks again, by half the workers at a time (the others keep the quota used: with
# three of four waiting, the one left could not keep a batch queued, and sending stopped):
# left to a retry round, its tokens went out after every other batch, a round's claims and
# a round trip after the day's work (3-5% of a 3-second day), however early the 429 came.
REASK_HOLD_SECONDS = 2.0

# Rounds retried at once after only 429s, per operation, before such rounds count as retries:
# the pacer lowers its pace after each, so this bounds a quota that stays exhausted.
MAX_PACED_ROUNDS = 20


@dataclass
class _OpState:
    """Where one operation's draining stands, between its rounds."""

    op: Op
    total: int
    retry_number: int = 0
    paced_rounds: int = 0
    paced: bool = False  # the last round failed tokens only with 429s
    going: bool = True  # rounds may follow
    done: bool = False  # nothing owed, or its retries spent
    settled: int = 0  # progress: tokens done or failed for good, of `total`
    owed: int = 0  # tokens its next round holds, as last counted
    failed: int = 0
    started: float | None = None  # its first claim, by deps.monotonic
    last_batch_at: float | None = None  # its last batch recorded so far, by deps.monotonic
    round_ended: float = 0.0  # its last round's last answer, by deps.monotonic
    round_failures: Counter[str] = field(default_factory=Counter)

    def ended(self, done: bool) -> bool:
        """No more rounds; `done`: it ended as planned (else the deadline or a stop)."""
        self.going, self.done = False, done
        return done


class Work:
    """Drains a topic's pending rows with several workers, retrying per the policy.

    Each worker claims its own batch (SKIP LOCKED), so one slow FCM call stalls one
    worker, not the run. Retryable tokens are re-batched in rounds; before an operation's
    next round, what is left of the retry policy's backoff is waited, counted from its last
    round's last answer (the other operations' rounds went out meanwhile), and what is left
    of a Retry-After, counted from its answer, not from the round's end, so a 429 early in a
    long round (the round went on meanwhile at the pacer's lowered pace) costs no idle
    second after it.

    The counts are kept in one place. A run's are kept by its runs row: each batch adds
    its own in the batch's transaction (store.add_progress), and the run reads them back
    from there (store.run_counts). A repair has no row: its counts are tallied in `tally`,
    and only there. Failed attempts per (op, code), which the row does not keep, are
    counted in `failures` (a repair's are its tally's).
    """

    def __init__(
        self,
        deps: Deps,
        topic: str,
        opts: WorkSettings,
        deadline_at: float,
        epoch: int,
        guard: DeadGuard,
        *,
        run_id: int | None = None,
        tally: SyncCounts | None = None,
    ) -> None:
        if (run_id is None) == (tally is None):
            raise ValueError("a run's id (its row keeps the counts) or a tally, one of them")
        self.deps, self.topic, self.run_id, self.opts = deps, topic, run_id, opts
        self.tally, self.deadline_at = tally, deadline_at
        self.failures: Counter[tuple[str, str]] = tally.failures if tally is not None else Counter()
        self.epoch, self.guard = epoch, guard
        self._lock = threading.Lock()  # what the workers share
        self._retry_at = 0.0  # by deps.monotonic: no token FCM refused is asked again before
        # Workers that may wait out a short hold within their batch at once.
        self._holds = threading.Semaphore(opts.concurrency // 2)

    def drain_all(
        self,
        work: Sequence[tuple[Op, int]],
        spent: Callable[[Op, float], None] | None = None,
    ) -> bool:
        """Work off several operations (removals first); False if the deadline or a stop
        left work owed.

        The operations go out in passes, each one stream: the workers claim the first
        operation's batches, and a worker that finds none of them left claims the next
        operation's while the last ones are still answered. Drained one after the other, each
        operation ended with its last batches answered, recorded and committed and the next
        one's first claims made while FCM's quota went unused: about a quarter of a second a
        phase at a quota, one of the two costs that held a day 2 under 95% of a 700/s window.
        The first pass is every operation's first round; each later pass, the retry rounds
        that are due, after waiting what the first of them owes (what is left of its backoff
        or of a Retry-After: the other operations' work has gone out meanwhile). `spent` is
        told each operation's seconds: in a pass, an operation's run up to its last batch,
        the next one's from there, so that they add up to the time spent.
        """
        states = [_OpState(op, total, owed=total) for op, total in work]
        due: list[_OpState] | None = states
        retrying = False
        while due:
            began = self.deps.monotonic()
            if retrying:
                due = self._wait_for_due(states)
                if due is None:
                    return False
                if not due:
                    break
            going = self._pass(due, retrying=retrying)
            if spent is not None:
                # Back to back: an operation's share ends with its last batch, and the next
                # one's is the time after it (their overlap counts once, as the former's).
                edge = began
                for state in due[:-1]:
                    until = edge if state.last_batch_at is None else max(edge, state.last_batch_at)
                    spent(state.op, until - edge)
                    edge = until
                spent(due[-1].op, max(0.0, self.deps.monotonic() - edge))
            if not going:
                return False
            retrying = True
        return all(state.done for state in states)

    def _pass(self, due: Sequence[_OpState], *, retrying: bool) -> bool:
        """One round of each operation in `due`, as one stream; False if the deadline or a
        stop cut it short with work left."""
        began = self.deps.monotonic()
        for state in due:
            state.round_failures = Counter()  # each round is judged by its own failures
        if self.deps.pacer is not None:
            # How much the stream holds, so that its end is paced knowing it is the end.
            self.deps.pacer.expect(sum(state.owed for state in due))
        if self.deps.should_stop() or not self._round(due, retrying=retrying):
            owed = self._owed()
            return all([state.ended(owed[state.op] == 0) for state in due])
        for state in due:
            self._after_round(state, began)
        return True

    def _wait_for_due(self, states: Sequence[_OpState]) -> list[_OpState] | None:
        """Wait until the first operation's next round is due: the operations due then (an
        empty list if none has a round to come); None if the deadline or a stop comes first
        with work left."""
        deps = self.deps
        owed = self._owed()
        waits: list[tuple[float, _OpState, str]] = []
        for state in states:
            if not state.going:
                continue
            if deps.should_stop() or not owed[state.op]:
                if not state.ended(owed[state.op] == 0):
                    return None
                continue
            state.owed = owed[state.op]
            wait, why = self._retry_wait(state)
            waits.append((wait, state, f"{state.op}: {owed[state.op]} tokens to retry ({why})"))
        if not waits:
            return []
        wait = min(seconds for seconds, _, _ in waits)
        if deps.monotonic() + wait > self.deadline_at:
            return None
        due = []
        for seconds, state, what in waits:
            if seconds <= wait:
                due.append(state)
                deps.log(f"{what} in {wait:.1f}s")
        deps.sleep(wait)
        if deps.should_stop():
            return None
        if self.run_id is not None and wait > 0:
            with deps.engine.begin() as conn:
                store.add_progress(conn, self.run_id, wait_seconds=wait)
        elif self.tally is not None:
            self.tally.wait_seconds += wait
        return due

    def _retry_wait(self, state: _OpState) -> tuple[float, str]:
        """Seconds before the operation's next round may go, and why."""
        deps = self.deps
        hold = deps.pacer.hold_remaining() if deps.pacer else 0.0
        hold = max(hold, self._retry_at - deps.monotonic(), 0.0)
        if state.paced:
            # Only 429s last round: the pacer has slowed down to the quota, so ask
            # again at once (a backoff of minutes would idle the quota away).
            return hold, "after 429s"
        # The backoff counts from the round's last answer, as a Retry-After counts from
        # its own: the other operations' rounds went out meanwhile.
        since = deps.monotonic() - state.round_ended
        backoff = self.opts.retry.wait(state.retry_number) - since
        return max(backoff, hold, 0.0), f"retry {state.retry_number}"

    def _after_round(self, state: _OpState, began: float) -> None:
        """Count the round that began at `began`: a retry (ending the operation once its
        retries are spent), or a round asked again at once after 429s."""
        last = state.last_batch_at
        state.round_ended = last if last is not None and last >= began else self.deps.monotonic()
        state.paced = self._only_rate_limited(state) and state.paced_rounds < MAX_PACED_ROUNDS
        if state.paced:
            state.paced_rounds += 1
        else:
            state.retry_number += 1
        if state.retry_number > self.opts.retry.max_retries:
            state.ended(True)  # its retries spent: what is still owed stays owed

    def _only_rate_limited(self, state: _OpState) -> bool:
        """The last round failed tokens only with 429s, and a pacer is there to slow down."""
        codes = set(state.round_failures)
        return self.deps.pacer is not None and codes == {RATE_LIMITED}

    def _owed(self) -> dict[Op, int]:
        """Tokens still owed per operation (one statement gives both)."""
        with self.deps.engine.begin() as conn:
            to_add, to_remove = store.pending_counts(conn, self.topic)
        return {Op.SUBSCRIBE: to_add, Op.UNSUBSCRIBE: to_remove}

    def _round(self, states: Sequence[_OpState], *, retrying: bool) -> bool:
        """One pass over every pending row of each operation in turn; False if the deadline
        cut it short. A worker that finds none of an operation's rows left to claim goes on
        to the next operation's while the other workers' batches are still answered."""
        with self.deps.engine.begin() as conn:
            round_start = store.db_now(conn)
        stop = threading.Event()
        cut_short = threading.Event()
        lanes = [(state, ClaimCursor()) for state in states]

        def worker() -> None:
            try:
                for state, cursor in lanes:
                    while not stop.is_set():
                        if self.deps.monotonic() >= self.deadline_at or self.deps.should_stop():
                            cut_short.set()
                            return
                        if not self._batch(state, round_start, cursor, retrying=retrying):
                            break
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

    def _batch(
        self,
        state: _OpState,
        round_start: dt.datetime,
        cursor: ClaimCursor,
        *,
        retrying: bool,
    ) -> bool:
        """One batch, redone if its database connection drops; False when none is left."""
        op = state.op
        with self._lock:
            if state.started is None:
                state.started = self.deps.monotonic()
            started = state.started
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_disconnect),
            stop=tenacity.stop_after_attempt(DB_ATTEMPTS),
            wait=tenacity.wait_fixed(0.2),
            reraise=True,
        ):
            with attempt:
                batch = _one_batch(
                    self.deps,
                    self.topic,
                    op,
                    self.run_id,
                    round_start,
                    self.opts.batch_size,
                    retrying=retrying,
                    epoch=self.epoch,
                    guard=self.guard,
                    deadline_at=self.deadline_at,
                    cursor=cursor,
                    holds=self._holds,
                )
        if batch is None:
            return False
        with self._lock:
            if self.tally is not None:  # no runs row (a repair): the counts are kept here
                if op is Op.SUBSCRIBE:
                    self.tally.added += batch.confirmed
                else:
                    self.tally.removed += batch.confirmed
                self.tally.attempts += batch.attempts
                self.tally.retries += batch.retries
                self.tally.newly_dead += batch.newly_dead
                self.tally.outcomes.update(batch.outcomes)
            self.failures.update({(op.value, c): n for c, n in batch.failures.items()})
            state.round_failures.update(batch.failures)
            if batch.retry_after:
                answered = self.deps.monotonic()  # no earlier than FCM's answer came
                self._retry_at = max(self._retry_at, answered + batch.retry_after)
            # Progress counts tokens settled (done or failed for good) out of the plan.
            state.settled += batch.settled
            state.failed += batch.failed - (batch.confirmed if retrying else 0)
            state.last_batch_at = self.deps.monotonic()
            event = Progress(op, state.settled, state.total, max(state.failed, 0), started)
        self.deps.progress(event)
        return True


@dataclass(frozen=True)
class BatchTally:
    attempts: int  # tokens asked, a token asked again within the batch counted each time
    retries: int  # of those, asked again (within the batch, or in a retry round)
    confirmed: int  # now in the state the operation wanted
    settled: int  # confirmed, or failed for good
    failed: int  # failed this attempt (retryable or permanent)
    outcomes: Counter[str]  # "ok" or error code, per token
    failures: Counter[str]  # error code, per token whose attempt failed
    retry_after: float | None
    newly_dead: int = 0


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
    deadline_at: float,
    cursor: ClaimCursor,
    holds: threading.Semaphore,
) -> BatchTally | None:
    """Claim, call FCM, record: one transaction that commits only after FCM answered.

    The transaction first checks (and holds, FOR SHARE) the topic's fence: nobody may
    plan the topic while the batch is in flight, and a batch of a stale plan never runs.
    """
    stop_reason = None
    with deps.engine.begin() as conn:
        check_fence(conn, topic, epoch, "this run" if run_id is not None else "this repair")
        status = SubscriptionStatus.pending_for(op)
        rows = cursor.claim(conn, topic, status, round_start, limit)
        if not rows:
            return None
        call = deps.client.subscribe if op is Op.SUBSCRIBE else deps.client.unsubscribe
        # The batch holds its transaction open while FCM answers: it ends in bounded time.
        give_up_at = min(deadline_at, deps.monotonic() + BATCH_BUDGET_SECONDS)
        endpoint_proven = guard.endpoint_proven(op)  # by earlier batches only
        judged: list[store.TokenOutcome | None] = [None] * len(rows)
        asking = list(range(len(rows)))  # the rows this call asks about
        attempts = successes = 0
        refused: Counter[str] = Counter()  # 429s asked again within the batch
        for reask in range(REASKS + 1):
            result = call([rows[i][1] for i in asking], topic, give_up_at=give_up_at)
            attempts += len(asking)
            for index, i in enumerate(asking):
                outcome = judge(rows[i][0], result, index, op, endpoint_proven=endpoint_proven)
                if outcome is None:
                    stop_reason = result.answers[index].reason
                elif result.answers[index].reason is None and result.answers[index].proven:
                    successes += 1
                judged[i] = outcome
            asking = [i for i in asking if _refused(judged[i])]
            if not asking or stop_reason is not None or reask == REASKS:
                break
            if not _may_ask_again(deps, give_up_at, holds):
                break
            refused[RATE_LIMITED] += len(asking)
        # The wait FCM asked for with its last answer (one waited within the batch is over).
        retry_after = result.retry_after
        outcomes = [outcome for outcome in judged if outcome is not None]
        guard.prove_endpoint(op, successes)
        dead = sum(1 for o in outcomes if o.invalid)
        if dead and not guard.admit(dead):
            outcomes = [
                o.distrusted(SubscriptionStatus.pending_for(op)) if o.invalid else o
                for o in outcomes
            ]
        newly_dead = store.record_outcomes(conn, topic, op.value, run_id, outcomes)
        confirmed = sum(1 for o in outcomes if o.status == SubscriptionStatus.confirmed_for(op))
        codes = Counter(o.code or "ok" for o in outcomes) + refused
        retries = attempts if retrying else attempts - len(rows)
        if run_id is not None:
            store.add_progress(
                conn,
                run_id,
                added=confirmed if op is Op.SUBSCRIBE else 0,
                removed=confirmed if op is Op.UNSUBSCRIBE else 0,
                attempts=attempts,
                retries=retries,
                outcomes=dict(codes),
                newly_dead=len(newly_dead),
            )
    if stop_reason is not None:
        raise CredentialsError(CREDENTIALS_HELP.format(reason=stop_reason))
    if guard.tripped:
        raise guard.error("syncing " + topic)
    settled = sum(1 for o in outcomes if o.status != SubscriptionStatus.pending_for(op))
    return BatchTally(
        attempts=attempts,
        retries=retries,
        confirmed=confirmed,
        settled=settled,
        failed=sum(1 for o in outcomes if o.failed),
        outcomes=codes,
        failures=Counter(o.code or "unknown-error" for o in outcomes if o.failed) + refused,
        retry_after=retry_after,
        newly_dead=len(newly_dead),
    )


def _refused(outcome: store.TokenOutcome | None) -> bool:
    """FCM answered the token 429 (its quota, not the token)."""
    return outcome is not None and outcome.code == RATE_LIMITED


def _may_ask_again(deps: Deps, give_up_at: float, holds: threading.Semaphore) -> bool:
    """A batch's 429s may be asked again now: a pacer paces the new asks, time is left, and
    the wait FCM asked for, if any, is short and has been waited (when a worker may)."""
    pacer = deps.pacer
    if pacer is None or deps.should_stop():
        return False
    hold = pacer.hold_remaining()
    if hold > 0:
        if hold > REASK_HOLD_SECONDS or deps.monotonic() + hold >= give_up_at:
            return False
        if not holds.acquire(blocking=False):
            return False  # the other workers are waiting: this batch's go to a retry round
        try:
            deps.sleep(hold)
        finally:
            holds.release()
        if deps.should_stop():
            return False
    return deps.monotonic() < give_up_at


def judge(
    token_id: int, result: BatchResult, index: int, op: Op, *, endpoint_proven: bool
) -> store.TokenOutcome | None:
    """What token `index` of a batch's answer settles; None means stop the run.

    Only an answer about the token settles it; a bare v1 404 NOT_FOUND is about the token
    only on an endpoint this run has seen answer per token (DeadGuard.endpoint_proven).
    """
    answer = result.answers[index]
    proven = answer.proven or (answer.bare_not_found and endpoint_proven)
    return _map(token_id, answer.reason, op, proven=proven)


def _map(token_id: int, reason: str | None, op: Op, *, proven: bool) -> store.TokenOutcome | None:
    """One token's FCM answer through the error table; None means stop the run."""
    if reason is None and proven:
        return store.TokenOutcome(
            token_id, SubscriptionStatus.confirmed_for(op), None, None, False, False
        )
    reason = UNEXPECTED_ANSWER if reason is None else reason  # a success nobody proved
    rule = rule_for(reason, op, proven=proven)
    outcome = rule.outcome(op)
    if outcome is Outcome.STOP:
        return None
    if outcome is Outcome.SUCCESS:
        return store.TokenOutcome(
            token_id,
            SubscriptionStatus.confirmed_for(op),
            rule.code,
            reason,
            False,
            rule.marks_invalid,
        )
    if outcome is Outcome.PERMANENT and op is Op.SUBSCRIBE:
        # FCM did not subscribe it and never will: the topic does not hold it.
        return store.TokenOutcome(
            token_id, SubscriptionStatus.UNSUBSCRIBED, rule.code, reason, True, rule.marks_invalid
        )
    return store.TokenOutcome(
        token_id, SubscriptionStatus.pending_for(op), rule.code, reason, True, False
    )
