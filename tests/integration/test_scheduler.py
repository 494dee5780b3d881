"""The built-in scheduler on a driven clock: no real waiting."""

from __future__ import annotations

import datetime as dt
import threading

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import text

from tests.support import write_audience
from topic_sync.app import scheduler
from topic_sync.config.file import load_config
from topic_sync.pool import topic_for

TODAY = dt.datetime.now(dt.UTC).date()  # `run --date today` uses the real date
PREFIX = "sched"


class ManualScheduler(BaseScheduler):
    """No thread of its own: the test calls tick() after moving the clock."""

    def wakeup(self) -> None:
        pass

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)

    def tick(self) -> None:
        self._process_jobs()


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.combine(TODAY, dt.time(6, 0), tzinfo=dt.UTC)

    def at(self, hour: int, minute: int, second: int = 0) -> None:
        self.now = dt.datetime.combine(TODAY, dt.time(hour, minute, second), tzinfo=dt.UTC)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()

    class FakeDatetime(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return clock.now.astimezone(tz) if tz else clock.now.replace(tzinfo=None)

    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", FakeDatetime)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", FakeDatetime)
    return clock


@pytest.fixture
def config_file(tmp_path, database_url, emulator, message_file):
    tokens = [f"sched:{i}" for i in range(25)]
    write_audience(tmp_path / f"{TODAY}.txt", tokens)
    path = tmp_path / "topic-sync.toml"
    path.write_text(
        f"""
database_url = "{database_url}"
emulator_host = "{emulator.host_port}"
mode = "live"
grace = "1h"
[defaults]
propagation_delay = 0
retry_min_wait = 0
retry_max_wait = 0
[campaigns.daily]
topic_prefix = "{PREFIX}"
pool_size = 3
message = "{message_file}"
audience = "{{date}}.txt"
run_at = "06:30"
timezone = "UTC"
"""
    )
    return path


def scheduler_for(database_url: str, config_path, events: list[str]) -> ManualScheduler:
    manual = scheduler.make_scheduler(database_url, executor=DebugExecutor(), cls=ManualScheduler)
    scheduler.watch(manual, events.append)
    manual.start(paused=False)
    scheduler.install_jobs(manual, load_config(config_path))
    return manual


def publishes(emulator) -> int:
    return sum(1 for p in emulator.publishes if p.topic == topic_for(PREFIX, 3, TODAY))


def test_fires_at_its_trigger_once(clock, config_file, database_url, emulator) -> None:
    events: list[str] = []
    manual = scheduler_for(database_url, config_file, events)
    manual.tick()
    assert publishes(emulator) == 0
    clock.at(6, 30, 1)
    manual.tick()
    assert publishes(emulator) == 1
    assert any("ended with exit code 0" in e for e in events)
    clock.at(6, 45)
    manual.tick()
    assert publishes(emulator) == 1
    job = manual.get_job(scheduler.job_id("daily"))
    assert job.next_run_time == dt.datetime.combine(
        TODAY + dt.timedelta(days=1), dt.time(6, 30), tzinfo=dt.UTC
    )
    manual.shutdown()


def test_restart_catches_up_a_missed_run_once(clock, config_file, database_url, emulator):
    first = scheduler_for(database_url, config_file, [])
    first.shutdown()  # down before 06:30
    clock.at(7, 10)  # back within the one-hour grace
    events: list[str] = []
    second = scheduler_for(database_url, config_file, events)
    second.tick()
    assert publishes(emulator) == 1
    second.tick()
    clock.at(7, 20)
    second.tick()
    assert publishes(emulator) == 1
    second.shutdown()


def test_a_run_missed_beyond_grace_is_skipped_and_logged(
    clock, config_file, database_url, emulator
) -> None:
    scheduler_for(database_url, config_file, []).shutdown()
    clock.at(8, 0)  # 90 minutes late, grace is one hour
    events: list[str] = []
    manual = scheduler_for(database_url, config_file, events)
    manual.tick()
    assert publishes(emulator) == 0
    assert any("missed by more than the grace period; skipped" in e for e in events)
    manual.shutdown()


def test_two_schedulers_on_one_database_publish_a_day_once(
    clock, config_file, database_url, emulator, monkeypatch
) -> None:
    # Both schedulers must really fire: each job waits for the other before it runs,
    # which only happens if both found the job due (neither had moved it to tomorrow).
    both_fired = threading.Barrier(2, timeout=30)
    real_runner = scheduler.RUNNER

    def runner(path: str, campaign: str, due: dt.datetime | None) -> int:
        both_fired.wait()
        return real_runner(path, campaign, due)

    monkeypatch.setattr(scheduler, "RUNNER", runner)
    events: list[str] = []
    a = scheduler_for(database_url, config_file, events)
    b = scheduler_for(database_url, config_file, events)
    clock.at(6, 30, 5)
    start = threading.Barrier(2)

    def tick(manual: ManualScheduler) -> None:
        start.wait()
        manual.tick()

    threads = [threading.Thread(target=tick, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert publishes(emulator) == 1
    codes = sorted(e.rsplit(" ", 1)[-1] for e in events if "ended with exit code" in e)
    assert codes in (["0", "0"], ["0", "3"])  # second: already published, or locked out
    a.shutdown()
    b.shutdown()


def test_changed_schedule_replaces_the_job_unchanged_keeps_it(clock, config_file, database_url):
    manual = scheduler_for(database_url, config_file, [])
    config = load_config(config_file)
    assert scheduler.install_jobs(manual, config) == []  # same schedule: kept as stored
    config_file.write_text(config_file.read_text().replace('run_at = "06:30"', 'run_at = "07:15"'))
    assert scheduler.install_jobs(manual, load_config(config_file)) == ["daily"]
    assert manual.get_job(scheduler.job_id("daily")).next_run_time.time() == dt.time(7, 15)
    manual.shutdown()


def test_interrupted_run_is_resumed_on_the_next_start(
    clock, config_file, database_url, emulator, engine
) -> None:
    from topic_sync.app.shutdown import PROCESS

    events: list[str] = []
    manual = scheduler_for(database_url, config_file, events)
    clock.at(6, 30, 1)
    PROCESS.requested.set()  # SIGTERM arrived: the run stops at its first safe point
    try:
        manual.tick()
    finally:
        PROCESS.requested.clear()
    assert publishes(emulator) == 0
    assert any("exit code 8" in e for e in events)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT status FROM runs")) == "interrupted"
    manual.shutdown()

    clock.at(6, 40)
    again = scheduler_for(database_url, config_file, events)
    resumed = scheduler.resume_interrupted(again, load_config(config_file), engine, clock.now)
    assert resumed == [("daily", TODAY)]
    again.tick()
    assert publishes(emulator) == 1
    again.shutdown()


def late_campaign(tmp_path, database_url, emulator, message_file, name: str):
    """A campaign run at 23:50 UTC whose only audience is yesterday's: (config, tokens)."""
    yesterday = TODAY - dt.timedelta(days=1)
    tokens = [f"{name}:{i}" for i in range(10)]
    write_audience(tmp_path / f"{yesterday}.txt", tokens)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
database_url = "{database_url}"
emulator_host = "{emulator.host_port}"
mode = "live"
grace = "2h"
[defaults]
propagation_delay = 0
[campaigns.{name}]
topic_prefix = "{name}"
pool_size = 3
message = "{message_file}"
audience = "{{date}}.txt"
run_at = "23:50"
timezone = "UTC"
"""
    )
    return path, tokens


def test_a_run_interrupted_late_is_resumed_after_midnight_for_its_own_day(
    clock, tmp_path, database_url, emulator, message_file, engine
) -> None:
    from topic_sync.app.shutdown import PROCESS

    yesterday = TODAY - dt.timedelta(days=1)
    path, tokens = late_campaign(tmp_path, database_url, emulator, message_file, "night")
    events: list[str] = []
    clock.now = dt.datetime.combine(yesterday, dt.time(23, 40), tzinfo=dt.UTC)
    manual = scheduler_for(database_url, path, events)
    clock.now = dt.datetime.combine(yesterday, dt.time(23, 50, 1), tzinfo=dt.UTC)
    PROCESS.requested.set()  # SIGTERM just before midnight: the run stops at a safe point
    try:
        manual.tick()
    finally:
        PROCESS.requested.clear()
    manual.shutdown()
    assert any("exit code 8" in e for e in events) and emulator.publishes == []

    clock.now = dt.datetime.combine(TODAY, dt.time(0, 15), tzinfo=dt.UTC)  # back after midnight
    again = scheduler_for(database_url, path, events)
    resumed = scheduler.resume_interrupted(again, load_config(path), engine, clock.now)
    assert resumed == [("night", yesterday)]
    again.tick()
    [publish] = emulator.publishes
    assert publish.topic == topic_for("night", 3, yesterday)  # its own day, not today's
    assert publish.recipients == frozenset(tokens)
    # Once resumed and published, a later restart finds nothing left to resume.
    assert scheduler.resume_interrupted(again, load_config(path), engine, clock.now) == []
    again.shutdown()


def test_a_catch_up_after_midnight_runs_the_day_that_was_due(
    clock, tmp_path, database_url, emulator, message_file
) -> None:
    yesterday = TODAY - dt.timedelta(days=1)
    # Only the missed day's audience exists.
    path, tokens = late_campaign(tmp_path, database_url, emulator, message_file, "late")
    clock.now = dt.datetime.combine(yesterday, dt.time(23, 0), tzinfo=dt.UTC)
    scheduler_for(database_url, path, []).shutdown()  # down before 23:50
    clock.now = dt.datetime.combine(TODAY, dt.time(0, 20), tzinfo=dt.UTC)  # back after midnight
    events: list[str] = []
    manual = scheduler_for(database_url, path, events)
    manual.tick()
    assert any("ended with exit code 0" in e for e in events), events
    [publish] = emulator.publishes
    assert publish.topic == topic_for("late", 3, yesterday)  # the day that was due, not today
    assert publish.recipients == frozenset(tokens)
    assert yesterday.isoformat() in str(publish.message)
    manual.shutdown()


def test_a_stored_job_that_is_not_topic_syncs_is_never_loaded(
    clock, config_file, database_url, tmp_path
) -> None:
    import pickle

    from sqlalchemy import create_engine

    manual = scheduler_for(database_url, config_file, [])
    job = manual.get_job(scheduler.job_id("daily"))
    state = job.__getstate__()
    manual.shutdown()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    rows = {
        "evil-func": pickle.dumps({**state, "id": "evil-func", "func": "os:system"}),
        "evil-pickle": pickle.dumps({**state, "id": "evil-pickle", "args": [Evil()]}),
    }
    engine = create_engine(database_url)
    with engine.begin() as conn:
        for job_id, blob in rows.items():
            conn.execute(
                text(
                    f"INSERT INTO {scheduler.JOBS_TABLE} (id, next_run_time, job_state) "
                    "VALUES (:id, 0, :state)"
                ),
                {"id": job_id, "state": blob},
            )
    engine.dispose()
    again = scheduler.make_scheduler(database_url, executor=DebugExecutor(), cls=ManualScheduler)
    again.start(paused=False)
    loaded = {j.id for j in again.get_jobs()}
    again.shutdown()
    assert loaded == {scheduler.job_id("daily")}  # topic-sync's own job, nothing else
    assert not marker.exists()  # the malicious pickle ran nothing


def test_a_campaign_publishing_at_a_set_time_starts_its_sync_early_enough(
    config_file, engine
) -> None:
    # publish_at and no run_at of its own: the scheduler chooses the start.
    text_ = config_file.read_text().replace('run_at = "06:30"\n', "")
    config_file.write_text(text_ + 'publish_at = "08:00"\nsync_margin = "30m"\n')
    config = load_config(config_file)
    campaign = config.campaigns["daily"]
    assert scheduler.start_time(campaign, TODAY, None) == dt.time(7, 30)  # no estimate yet
    assert scheduler.start_time(campaign, TODAY, 3600 + 59) == dt.time(6, 29)  # rounded earlier
    assert scheduler.start_time(campaign, TODAY, 12 * 3600) == dt.time(0, 0)  # not the day before
    # From the campaign's recent days: the largest, 90,000 operations at --rate-limit 3000/s
    # is 30 s; with the margin, 07:29.
    from tests.support import ensure_campaign

    with engine.begin() as conn:
        campaign_id = ensure_campaign(conn, "daily", 3)
        for back, ops in ((1, 60_000), (2, 90_000), (9, 900_000)):  # the 9th day is too old
            conn.execute(
                text(
                    "INSERT INTO runs (campaign_id, prefix, run_date, topic, transport, "
                    "status, to_add, to_remove) VALUES (:c, :p, :d, 't', 'v1', 'published', "
                    ":n, 0)"
                ),
                {"c": campaign_id, "p": PREFIX, "d": TODAY - dt.timedelta(days=back), "n": ops},
            )
    now = dt.datetime.combine(TODAY, dt.time(0, 5), tzinfo=dt.UTC)
    assert scheduler.start_times(config, engine, now) == {"daily": dt.time(7, 29)}
    # A campaign that sets run_at keeps it: that is its configured sync start.
    config_file.write_text(config_file.read_text() + 'run_at = "05:00"\n')
    assert scheduler.start_times(load_config(config_file), engine, now) == {"daily": dt.time(5, 0)}
