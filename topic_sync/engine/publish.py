"""Publishing a synced day: its window, the wait for it, and the one send.

A campaign may say when its message goes out (`publish_at`, a local time) and how late it
may still go (`publish_by`). The run syncs as early as it is started, records the day as
synced and waiting (status `waiting`, with the window), waits on the injected clock, then
publishes through `publish_once`: one transaction proves the topic is still this run's
(its fence) and that no removal is owed, and records the intent before the message can
leave, so a crash can never lead to a second send. A day that cannot publish by its
`publish_by` is not sent at all (status `missed`, exit 13): a morning message in the
afternoon is worse than none, unless an operator says otherwise with --publish-late.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from zoneinfo import ZoneInfo

import tenacity
from sqlalchemy import Connection

from topic_sync import store
from topic_sync.engine import evidence
from topic_sync.engine.drain import check_fence
from topic_sync.engine.retry import RetryPolicy
from topic_sync.engine.types import Deps, Phases
from topic_sync.errors import (
    CredentialsError,
    Interrupted,
    MissedWindow,
    PublishUnrecorded,
    PublishWithheld,
    RemovalsUnconfirmed,
)
from topic_sync.fcm.client import PublishError
from topic_sync.inputs.message import MessageTemplate
from topic_sync.states import RunStatus

# publish_by when a campaign sets publish_at alone: two hours later.
DEFAULT_PUBLISH_WINDOW = dt.timedelta(hours=2)
# The longest one sleep of the wait: the lock is checked (and the stop request heard) at
# least this often.
WAIT_STEP_SECONDS = 30.0


class Step(enum.StrEnum):
    """What a `run` does of the day: both (the default), or one half of it."""

    SYNC_AND_PUBLISH = "sync-and-publish"
    SYNC = "sync-only"  # sync now; neither wait nor publish (a later run publishes)
    PUBLISH = "publish-only"  # publish a day already synced, at its time; never sync


@dataclass(frozen=True)
class Window:
    """When a day's message may go out: from `publish_at` to `publish_by` (aware times)."""

    publish_at: dt.datetime
    publish_by: dt.datetime

    @classmethod
    def of(cls, day: dt.date, publish_at: dt.time, publish_by: dt.time | None, zone: str) -> Window:
        """The day's window in the campaign's zone. publish_by is the first such time after
        publish_at (the next day's when it is earlier on the clock: 23:00 to 01:00); unset,
        it is publish_at + 2 h."""
        tz = ZoneInfo(zone)
        start = dt.datetime.combine(day, publish_at, tzinfo=tz)
        if publish_by is None:
            return cls(start, start + DEFAULT_PUBLISH_WINDOW)
        end = dt.datetime.combine(day, publish_by, tzinfo=tz)
        if end <= start:
            end = dt.datetime.combine(day + dt.timedelta(days=1), publish_by, tzinfo=tz)
        return cls(start, end)

    def local(self, moment: dt.datetime | None = None) -> str:
        """publish_at (or another moment) as the campaign's clock shows it: 08:00 CET."""
        shown = (moment or self.publish_at).astimezone(self.publish_at.tzinfo)
        return f"{shown:%H:%M} {shown.tzname()}"


def window_of(record: store.RunRecord) -> Window | None:
    """The window a run row recorded, if it has one."""
    if record.publish_at is None or record.publish_by is None:
        return None
    return Window(record.publish_at, record.publish_by)


@dataclass
class Sent:
    """How the publish step ended: the message id (None: someone had already sent it),
    when it was sent, and how late against the window."""

    message_id: str | None
    sent_at: dt.datetime
    late: bool = False  # sent after publish_by (--publish-late)


@dataclass(frozen=True)
class PublishPlan:
    """What the publish step needs of the run."""

    run_id: int
    day: dt.date
    topic: str
    epoch: int  # the topic's fence as the run planned it
    window: Window | None
    publish_late: bool
    republish: bool
    propagation_delay: float
    policy: RetryPolicy
    synced_at: dt.datetime  # when the sync completed (the injected clock)


def publish_day(
    deps: Deps,
    plan: PublishPlan,
    template: MessageTemplate,
    verify_lock: Callable[[], None],
    receipt: Receipt,
    phases: Phases,
) -> Sent:
    """Wait for the window (if any), let subscriptions propagate, then publish once.

    Past publish_by (without --publish-late) the day is recorded `missed` and nothing is
    sent; a stop requested while waiting leaves the day synced (a rerun resumes the wait).
    """
    window = plan.window
    if window is not None:
        with phases.timing("wait"):
            _wait_until(deps, plan, window.publish_at, verify_lock, window)
        _check_window(deps, plan, window)
    since_sync = (deps.now() - plan.synced_at).total_seconds()
    propagation = plan.propagation_delay - max(0.0, since_sync)
    if propagation > 0:
        deps.log(f"waiting {propagation:g}s for subscriptions to propagate")
        with phases.timing("propagation"):
            deps.sleep(propagation)
    if deps.should_stop():
        _stopped(deps, plan, "before publishing")
    verify_lock()
    if window is not None:
        _check_window(deps, plan, window)  # the propagation delay may have crossed it
    sent_at = deps.now()
    late = window is not None and sent_at > window.publish_by
    with phases.timing("publish"):
        message_id = publish_once(
            deps,
            plan.run_id,
            template,
            plan.topic,
            republish=plan.republish,
            policy=plan.policy,
            epoch=plan.epoch,
            receipt=receipt,
            note=late_note(window, sent_at) if late and window is not None else None,
        )
    return Sent(message_id, sent_at, late)


def late_note(window: Window, sent_at: dt.datetime) -> str:
    return (
        f"published late (--publish-late): {_minutes(sent_at - window.publish_at)} after "
        f"publish_at {window.local()}, past publish_by {window.local(window.publish_by)}"
    )


def _minutes(delta: dt.timedelta) -> str:
    minutes = max(0, round(delta.total_seconds() / 60))
    hours, rest = divmod(minutes, 60)
    return f"{hours}h{rest:02d}m" if hours else f"{rest}m"


def _wait_until(
    deps: Deps,
    plan: PublishPlan,
    until: dt.datetime,
    verify_lock: Callable[[], None],
    window: Window,
) -> None:
    """Sleep (the injected sleep) until `until`, holding the campaign's lock and hearing a
    stop request at least every WAIT_STEP_SECONDS."""
    remaining = (until - deps.now()).total_seconds()
    if remaining <= 0:
        return
    deps.log(
        f"{plan.day} is synced; waiting {_minutes(until - deps.now())} to publish at "
        f"{window.local()} (publish_by {window.local(window.publish_by)})"
    )
    while remaining > 0:
        if deps.should_stop():
            _stopped(deps, plan, f"while waiting to publish at {window.local()}")
        deps.sleep(min(remaining, WAIT_STEP_SECONDS))
        verify_lock()
        remaining = (until - deps.now()).total_seconds()


def _check_window(deps: Deps, plan: PublishPlan, window: Window) -> None:
    """Past publish_by: record the day missed and stop, unless --publish-late."""
    now = deps.now()
    if now <= window.publish_by or plan.publish_late:
        return
    note = (
        f"missed its window: synced, but it is {window.local(now)}, past publish_by "
        f"{window.local(window.publish_by)} (publish_at {window.local()}); not published"
    )
    with deps.engine.begin() as conn:
        store.finish_run(conn, plan.run_id, RunStatus.MISSED, note)
    raise MissedWindow(
        f"{plan.day} {note}. The sync stands: 'topic-sync run --date {plan.day} --live "
        "--publish-late' sends it anyway, recorded as late"
    )


def _stopped(deps: Deps, plan: PublishPlan, when: str) -> NoReturn:
    with deps.engine.begin() as conn:
        store.finish_run(
            conn,
            plan.run_id,
            RunStatus.INTERRUPTED,
            f"stopped on request {when}; the sync is complete: rerun this date to publish",
        )
    raise Interrupted(
        f"stopped on request {when} {plan.day}; the sync is complete: rerun this date to "
        "publish (it resumes into the wait, without syncing again)"
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


@dataclass(frozen=True)
class Receipt:
    """Whose publish it is, for the evidence of a send the database could not record."""

    campaign: str
    campaign_id: int
    day: dt.date
    evidence_dir: Path | None  # None: no last-resort file (the message id is still logged)


# A publish FCM accepted is recorded on a new connection after a database blip, waiting
# 1, 2, 4, ... 60 s between tries (about 4 minutes in all) before the last resort.
CONFIRM_ATTEMPTS = 9


def publish_once(
    deps: Deps,
    run_id: int,
    template: MessageTemplate,
    topic: str,
    *,
    republish: bool,
    policy: RetryPolicy,
    epoch: int,
    receipt: Receipt,
    note: str | None = None,
) -> str | None:
    """Send the day's message unless someone already has. Returns its id, or None.

    Before every attempt, one transaction proves the topic is still this run's (the
    fence), that no removal from it is owed, and stamps the intent: an intent is always
    recorded before the message can leave, and another planner waits while it is fresh.
    Once FCM accepted it, its id is logged before anything else, then recorded (see
    _record_sent) with `note` (a late publish says so).
    """
    with deps.engine.begin() as conn:
        check_fence(conn, topic, epoch, "this run")
        _check_no_owed_removals(conn, topic)
        intent_at = store.claim_publish(conn, run_id, republish=republish)
    if intent_at is None:
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
                        check_fence(conn, topic, epoch, "this run")
                        _check_no_owed_removals(conn, topic)
                        intent_at = store.refresh_publish_intent(conn, run_id) or intent_at
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
            store.finish_run(
                conn, run_id, RunStatus.PUBLISHING, f"publish unconfirmed: {error.message}"
            )
        raise PublishWithheld(
            f"the publish to {topic} got an answer that does not prove FCM did not take it "
            f"({error.message}). It may have gone out. Check FCM (or the devices), then "
            "rerun with --republish to send it again"
        ) from error
    _record_sent(deps, run_id, topic, message_id, intent_at, receipt, note)
    deps.log(f"published to {topic}: {message_id}")
    return message_id


def _record_sent(
    deps: Deps,
    run_id: int,
    topic: str,
    message_id: str,
    intent_at: dt.datetime,
    receipt: Receipt,
    note: str | None,
) -> None:
    """FCM accepted the message: say so first (the log outlives any database), then record
    it, retrying on new connections; if the database stays out of reach, leave the
    evidence in a file the next run and `status` read, and stop with exit 4."""
    accepted_at = deps.now()
    deps.log(
        f"FCM accepted the publish of {receipt.day} to {topic}: message id {message_id}; "
        "recording it"
    )
    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(CONFIRM_ATTEMPTS),
            wait=tenacity.wait_exponential(multiplier=1, max=60),
            sleep=deps.sleep,
            before_sleep=lambda state: deps.log(
                f"recording message id {message_id} failed ({_reason(state)}); trying again "
                "on a new connection"
            ),
            reraise=True,
        ):
            with attempt, deps.engine.begin() as conn:
                store.confirm_publish(conn, run_id, message_id, note=note)
        return
    except Exception as error:
        failure = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
    kept = "no state folder to keep evidence in"
    if receipt.evidence_dir is not None:
        found = evidence.PublishEvidence(
            project_id=deps.client.target.project_id,
            endpoint=deps.client.target.endpoint,
            campaign=receipt.campaign,
            campaign_id=receipt.campaign_id,
            run_id=run_id,
            date=receipt.day.isoformat(),
            topic=topic,
            message_id=message_id,
            intent_at=intent_at.isoformat(),
            accepted_at=accepted_at.isoformat(),
        )
        try:
            kept = f"evidence kept in {evidence.write(receipt.evidence_dir, found)}"
        except OSError as error:
            kept = f"the evidence file could not be written either ({error})"
    raise PublishUnrecorded(
        f"FCM accepted the publish of {receipt.day} to {topic} as message id {message_id}, "
        f"but the database could not record it after {CONFIRM_ATTEMPTS} tries ({failure}). "
        f"It went out: do NOT resend it. {kept[0].upper()}{kept[1:]}; the next live run of "
        f"campaign {receipt.campaign!r} on this host records it. From another host, once the "
        f"database is back: topic-sync run --date {receipt.day} --mark-published"
    )


def _reason(state: tenacity.RetryCallState) -> str:
    error = state.outcome.exception() if state.outcome else None
    return type(error).__name__ if error else "unknown"


def record_evidence(deps: Deps, evidence_dir: Path, campaign_id: int) -> None:
    """Record the publishes this host's evidence files prove for the campaign."""
    evidence.record_pending(deps.engine, deps.client.target, evidence_dir, campaign_id, deps.log)


def _check_no_owed_removals(conn: Connection, topic: str) -> None:
    """What changed since the sync finished: a removal queued meanwhile (forget) blocks."""
    owed = store.pending_counts(conn, topic)[1]
    if owed:
        raise RemovalsUnconfirmed(
            f"not publishing: {owed} removals from {topic} became owed since the sync "
            "finished (e.g. 'topic-sync forget'); reconcile sends them, then a rerun of this "
            "date publishes"
        )


def still_synced(conn: Connection, record: store.RunRecord) -> bool:
    """Whether a synced day's plan still stands: the topic's fence is still its run's
    (nobody planned the topic since) and no removal from it is owed."""
    if record.synced_at is None:
        return False
    fence = store.read_fence(conn, record.topic, lock=False)
    if fence is None or fence.run_id != record.id:
        return False
    return store.pending_counts(conn, record.topic)[1] == 0
