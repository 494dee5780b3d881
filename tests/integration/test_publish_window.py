"""Publishing at a set time: the run syncs early, waits on the injected clock, publishes at
publish_at, at once when the sync ended inside the window, never past publish_by (unless
--publish-late); a synced day's wait survives a crash, and a second run is refused while one
waits. Real PostgreSQL, the real SDK against the emulator; the clock is injected, nothing
sleeps."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import text

from tests.support import DAY, PREFIX, opts, toks
from topic_sync.engine.publish import Step, Window
from topic_sync.engine.run import run_day
from topic_sync.engine.types import Deps
from topic_sync.errors import ExitCode, Locked, MissedWindow, NotSynced
from topic_sync.pool import topic_for
from topic_sync.states import RunStatus

AT = dt.time(8, 0)
PUBLISH_AT = dt.datetime.combine(DAY, AT, tzinfo=dt.UTC)


class Clock:
    """The run's wall clock: a sleep moves it on; `hook` runs at every sleep."""

    def __init__(self, start: dt.datetime) -> None:
        self.at = start
        self.sleeps: list[float] = []
        self.hook = lambda: None

    def now(self) -> dt.datetime:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.at += dt.timedelta(seconds=seconds)
        self.hook()

    def not_before(self, moment: dt.datetime) -> None:
        self.at = max(self.at, moment)


class Crash(BaseException):
    """A kill: nothing in the run catches it, nothing records it."""


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time(hour, minute), tzinfo=dt.UTC)


def clocked(deps: Deps, clock: Clock, **kw: object) -> Deps:
    return dataclasses.replace(deps, now=clock.now, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def row(engine) -> dict[str, object]:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT status, publish_state, attempt, note, publish_at, publish_by, synced_at "
                "FROM runs WHERE run_date = :day"
            ),
            {"day": DAY},
        ).one()
    return dict(found._mapping)


def sync_requests(emulator) -> int:
    """FCM requests other than sends (subscriptions and removals)."""
    return sum(n for (kind, _status), n in emulator.stats.items() if kind != "send")


def test_publishes_at_publish_at_after_waiting_synced(
    tmp_path, message_file, deps, emulator, engine
) -> None:
    clock = Clock(at(6))
    seen: list[tuple[object, int]] = []
    clock.hook = lambda: seen.append((row(engine)["status"], len(emulator.publishes)))
    audience = toks(0, 30)
    result = run_day(opts(tmp_path, message_file, audience, publish_at=AT), clocked(deps, clock))
    topic = topic_for(PREFIX, 2, DAY)
    assert result.status == "published" and result.exit_code is ExitCode.OK
    assert result.sent_at == PUBLISH_AT and result.lateness_seconds == 0
    assert result.sync_margin_seconds == 2 * 3600
    assert sum(clock.sleeps) == 2 * 3600  # waited exactly until publish_at
    # While it waited, the day was synced and waiting, and nothing had gone out.
    assert seen and all(state == (RunStatus.WAITING, 0) for state in seen[:-1])
    assert emulator.members(topic) == set(audience)
    assert len(emulator.publishes) == 1
    record = row(engine)
    assert record["status"] == RunStatus.PUBLISHED
    assert record["publish_at"] == PUBLISH_AT and record["publish_by"] == at(10)
    assert record["synced_at"] == at(6)


def test_a_sync_ending_after_publish_at_publishes_at_once(
    tmp_path, message_file, deps, emulator, engine
) -> None:
    clock = Clock(at(7, 30))
    # The sync takes an hour: it ends at 08:30, inside the window (publish_by 10:00).
    slow = clocked(deps, clock, progress=lambda _p: clock.not_before(at(8, 30)))
    result = run_day(opts(tmp_path, message_file, toks(0, 30), publish_at=AT), slow)
    assert result.status == "published"
    assert clock.sleeps == []  # no wait
    assert result.sent_at == at(8, 30) and result.lateness_seconds == 1800
    assert result.sync_margin_seconds == -1800
    assert len(emulator.publishes) == 1
    assert row(engine)["status"] == RunStatus.PUBLISHED


def test_a_sync_ending_after_publish_by_is_not_published_then_publish_late_sends_it(
    tmp_path, message_file, deps, emulator, engine
) -> None:
    clock = Clock(at(7, 30))
    slow = clocked(deps, clock, progress=lambda _p: clock.not_before(at(10, 30)))
    audience = toks(0, 30)
    options = opts(tmp_path, message_file, audience, publish_at=AT)
    with pytest.raises(MissedWindow, match="missed its window") as missed:
        run_day(options, slow)
    assert missed.value.exit_code is ExitCode.MISSED_WINDOW == 13
    assert "--publish-late" in missed.value.message
    assert emulator.publishes == []
    record = row(engine)
    assert record["status"] == RunStatus.MISSED and record["publish_state"] == "none"
    assert "missed its window" in str(record["note"])
    # The operator sends it anyway: no second sync, one publish, recorded as late.
    requests = sync_requests(emulator)
    late = run_day(dataclasses.replace(options, publish_late=True), slow)
    assert late.status == "published" and late.late and late.resumed
    assert sync_requests(emulator) == requests
    assert len(emulator.publishes) == 1
    record = row(engine)
    assert record["status"] == RunStatus.PUBLISHED and record["attempt"] == 1
    assert "published late" in str(record["note"])


def test_a_run_started_after_publish_by_syncs_nothing(
    tmp_path, message_file, deps, emulator, engine
) -> None:
    clock = Clock(at(11))
    with pytest.raises(MissedWindow, match="nothing synced"):
        run_day(opts(tmp_path, message_file, toks(0, 30), publish_at=AT), clocked(deps, clock))
    assert sync_requests(emulator) == 0 and emulator.publishes == []
    assert row(engine)["status"] == RunStatus.MISSED


def test_a_crash_while_waiting_resumes_into_the_wait_and_publishes_once(
    tmp_path, message_file, deps, emulator, engine
) -> None:
    clock = Clock(at(6))

    def crash() -> None:
        raise Crash

    clock.hook = crash
    audience = toks(0, 30)
    options = opts(tmp_path, message_file, audience, publish_at=AT)
    with pytest.raises(Crash):
        run_day(options, clocked(deps, clock))
    assert row(engine)["status"] == RunStatus.WAITING and emulator.publishes == []
    requests = sync_requests(emulator)

    rerun_clock = Clock(at(7))
    result = run_day(options, clocked(deps, rerun_clock))
    assert result.status == "published" and result.resumed
    assert sum(rerun_clock.sleeps) == 3600  # back into the wait, until 08:00
    assert result.sent_at == PUBLISH_AT
    assert sync_requests(emulator) == requests  # nothing synced again
    assert len(emulator.publishes) == 1
    assert emulator.publishes[0].recipients == frozenset(audience)
    record = row(engine)
    assert record["status"] == RunStatus.PUBLISHED and record["attempt"] == 1
    # And once more: the publish record keeps it at one.
    again = run_day(options, clocked(deps, Clock(at(9))))
    assert again.status == "already-published" and len(emulator.publishes) == 1


def test_a_second_run_while_one_waits_is_refused_naming_the_wait(
    tmp_path, message_file, deps, emulator, engine
) -> None:
    clock = Clock(at(6))
    refusals: list[Locked] = []
    options = opts(tmp_path, message_file, toks(0, 30), publish_at=AT)

    def second_run() -> None:
        if refusals:
            return
        try:
            run_day(options, clocked(deps, Clock(at(6, 30))))
        except Locked as error:
            refusals.append(error)

    clock.hook = second_run
    result = run_day(options, clocked(deps, clock))
    assert result.status == "published" and len(emulator.publishes) == 1
    assert len(refusals) == 1
    message = refusals[0].message
    assert "waiting to publish at 08:00 UTC" in message and str(DAY) in message
    assert refusals[0].exit_code is ExitCode.LOCKED


def test_sync_only_then_publish_only(tmp_path, message_file, deps, emulator, engine) -> None:
    options = opts(tmp_path, message_file, toks(0, 30), publish_at=AT)
    with pytest.raises(NotSynced, match="not synced") as refused:
        run_day(dataclasses.replace(options, step=Step.PUBLISH), clocked(deps, Clock(at(6))))
    assert refused.value.exit_code is ExitCode.NOT_READY
    assert sync_requests(emulator) == 0

    synced = run_day(dataclasses.replace(options, step=Step.SYNC), clocked(deps, Clock(at(6))))
    assert synced.status == "synced" and synced.exit_code is ExitCode.OK
    assert emulator.publishes == [] and row(engine)["status"] == RunStatus.WAITING
    requests = sync_requests(emulator)

    clock = Clock(at(7, 45))
    published = run_day(dataclasses.replace(options, step=Step.PUBLISH), clocked(deps, clock))
    assert published.status == "published" and published.sent_at == PUBLISH_AT
    assert sync_requests(emulator) == requests and len(emulator.publishes) == 1


def test_a_topic_planned_again_since_the_sync_is_synced_again(
    tmp_path, message_file, deps, emulator, engine
) -> None:
    options = opts(tmp_path, message_file, toks(0, 30), publish_at=AT)
    run_day(dataclasses.replace(options, step=Step.SYNC), clocked(deps, Clock(at(6))))
    with engine.begin() as conn:  # someone else planned the topic since (its fence moved)
        conn.execute(text("UPDATE topic_fences SET epoch = epoch + 1, run_id = NULL"))
    with pytest.raises(NotSynced, match="no longer stands"):
        run_day(dataclasses.replace(options, step=Step.PUBLISH), clocked(deps, Clock(at(7))))
    result = run_day(options, clocked(deps, Clock(at(7))))
    assert result.status == "published" and not result.resumed
    assert row(engine)["attempt"] == 2 and len(emulator.publishes) == 1


def test_window_defaults_and_crossing_midnight() -> None:
    window = Window.of(DAY, AT, None, "Europe/Paris")
    assert window.publish_by - window.publish_at == dt.timedelta(hours=2)
    assert window.local() == "08:00 CET"
    late = Window.of(DAY, dt.time(23, 0), dt.time(1, 0), "UTC")
    assert late.publish_by == dt.datetime.combine(
        DAY + dt.timedelta(days=1), dt.time(1, 0), tzinfo=dt.UTC
    )


def test_the_run_and_doctor_warn_when_the_sync_will_likely_not_be_done_by_publish_at(
    tmp_path, message_file, deps, recorder, emulator, engine
) -> None:
    from tests.support import ensure_campaign
    from topic_sync import store
    from topic_sync.app.doctor import CheckStatus, check_publish_window
    from topic_sync.config.resolve import resolve
    from topic_sync.states import FcmApi

    with engine.begin() as conn:  # the day before planned a million operations
        campaign_id = ensure_campaign(conn, PREFIX, 2)
        conn.execute(
            text(
                "INSERT INTO runs (campaign_id, prefix, run_date, topic, transport, status, "
                "to_add, to_remove) VALUES (:c, :p, :d, 't', 'v1', 'published', 600000, 400000)"
            ),
            {"c": campaign_id, "p": PREFIX, "d": DAY - dt.timedelta(days=1)},
        )
    options = opts(tmp_path, message_file, toks(0, 30), publish_at=AT)
    # 1,000,000 operations at --rate-limit 3,000/s: 5m33s; started at 07:50, done in time.
    on_time = run_day(options, clocked(deps, Clock(at(7, 50))))
    assert not any("will likely not finish" in w for w in on_time.warnings)
    assert any("1,000,000 operations" in line for line in recorder.lines)
    # The quota learned against this target is 700/s: 23m49s, past 08:00 from 07:50.
    with engine.begin() as conn:
        project, endpoint = store.bound_target(conn)
        api = FcmApi.of_transport(deps.client.transport)
        store.remember_quota(conn, project, endpoint, api, 700.0, True)
    again = run_day(options, clocked(deps, Clock(at(7, 50))))
    warning = next(w for w in again.warnings if "will likely not finish" in w)
    assert "700/s" in warning and "the quota learned" in warning

    def checked(now: dt.datetime):
        resolved = resolve(
            {
                "topic_prefix": PREFIX,
                "pool_size": 2,
                "publish_at": "08:00",
                "transport": deps.client.transport,  # the quota is learned per API
            },
            {},
            day=str(DAY),
            environ={},
            now=now,
        )
        return check_publish_window(engine, resolved, now)

    early, late = checked(at(6)), checked(at(7, 50))
    assert early.status is CheckStatus.OK and "start it by 07:06 UTC" in early.detail
    assert late.status is CheckStatus.WARN and "will likely not finish" in late.detail
