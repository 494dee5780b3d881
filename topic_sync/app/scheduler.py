"""`topic-sync schedule`: one cron-triggered job per campaign, in the foreground.

Jobs live in the same PostgreSQL (APScheduler's SQLAlchemy job store, table
`scheduler_jobs`), so a restarted scheduler knows what it missed: a run missed
by less than the configuration's `grace` is run once (coalesced); an older one
is logged and skipped, never run twice. Each job runs exactly what cron would:
`topic-sync run --config FILE --campaign NAME --date today`. Several schedulers
on one database may fire the same job; the run's advisory lock and its publish
record make the day go out once all the same.
"""

from __future__ import annotations

import datetime as dt
import logging
import pickle
from collections.abc import Callable, Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine

from topic_sync.app.services import Io
from topic_sync.app.shutdown import PROCESS, Shutdown
from topic_sync.config.file import Campaign, Config
from topic_sync.config.table import DEFAULTS
from topic_sync.engine.estimate import estimate, sync_start
from topic_sync.errors import TopicSyncError
from topic_sync.states import FcmApi, PublishState, RunStatus
from topic_sync.store.db import sqlalchemy_url

JOBS_TABLE = "scheduler_jobs"
JOB_PREFIX = "campaign:"
# What a stored job calls. A job stored by an older release under another reference is
# replaced by install_jobs (references are compared), never run from a stale path.
JOB_FUNC = "topic_sync.app.scheduler:run_campaign"
log = logging.getLogger("topic_sync.app.scheduler")

# What a job calls; replaced in tests. Returns the run's exit code. `due` is when the job
# was due (its scheduled fire time), which decides the run's date.
Runner = Callable[[str, str, dt.datetime | None], int]


def job_id(campaign: str) -> str:
    return JOB_PREFIX + campaign


def make_scheduler(
    database_url: str,
    *,
    executor: Any = None,
    cls: type[BaseScheduler] = BackgroundScheduler,
) -> BaseScheduler:
    """A scheduler whose jobs persist in PostgreSQL; one job runs at a time."""
    return cls(
        jobstores={
            "default": TopicSyncJobStore(url=sqlalchemy_url(database_url), tablename=JOBS_TABLE)
        },
        executors={"default": _telling_due_time(executor or ThreadPoolExecutor(1))},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=dt.UTC,
    )


def start_time(campaign: Campaign, day: dt.date, estimate_seconds: float | None) -> dt.time:
    """When the scheduler starts the campaign's day: its run_at, unless it sets publish_at
    and no run_at of its own; then early enough for the sync to end sync_margin before
    publish_at (publish_at - estimate - sync_margin, to the minute, earlier rounding),
    never before midnight: the day is the date the job fires on. Without an estimate (no
    earlier day), publish_at - sync_margin."""
    publish_at = campaign.sync.get("publish_at")
    if publish_at is None or campaign.run_at_given:
        return campaign.run_at
    margin = float(campaign.sync.get("sync_margin", DEFAULTS.sync_margin))
    at = dt.datetime.combine(day, dt.time.fromisoformat(publish_at), tzinfo=campaign.zone)
    start = sync_start(at, estimate_seconds or 0.0, margin).astimezone(campaign.zone)
    if start.date() < day:
        return dt.time(0, 0)
    return start.time().replace(second=0, microsecond=0)


def start_times(config: Config, engine: Engine, now: dt.datetime) -> dict[str, dt.time]:
    """Each campaign's start for its next day, from its recent days' sync estimates."""
    from topic_sync import store

    starts = {}
    for name, campaign in config.campaigns.items():
        day = campaign.today(now)
        rate = float(campaign.sync.get("rate_limit", DEFAULTS.rate_limit))
        api = FcmApi.of_transport(str(campaign.sync.get("transport", DEFAULTS.transport)))
        with engine.connect() as conn:
            recorded = store.campaign_by_name(conn, name)
            guess = estimate(conn, recorded.id, day, rate_limit=rate, api=api) if recorded else None
            conn.rollback()
        starts[name] = start_time(campaign, day, guess.seconds if guess else None)
    return starts


def trigger_for(config: Config, name: str, start: dt.time | None = None) -> CronTrigger:
    campaign = config.campaigns[name]
    at = start or campaign.run_at
    return CronTrigger(hour=at.hour, minute=at.minute, timezone=campaign.zone)


def install_jobs(
    scheduler: BaseScheduler, config: Config, starts: Mapping[str, dt.time] | None = None
) -> list[str]:
    """Make the stored jobs match the configuration (and the starts computed for
    campaigns that publish at a set time; see start_times).

    A job whose schedule did not change is left alone, keeping its next run time:
    that is how a restarted scheduler sees the run it missed.
    """
    grace = int(config.grace)
    args = [str(config.path.resolve())]
    changed = []
    for name in config.campaigns:
        trigger = trigger_for(config, name, (starts or {}).get(name))
        existing = scheduler.get_job(job_id(name))
        if (
            existing is not None
            and str(existing.trigger) == str(trigger)
            and str(existing.trigger.timezone) == str(trigger.timezone)
            and list(existing.args) == [*args, name]
            and existing.misfire_grace_time == grace
            and existing.func_ref == JOB_FUNC
        ):
            continue
        scheduler.add_job(
            JOB_FUNC,
            trigger,
            args=[*args, name],
            id=job_id(name),
            name=f"topic-sync run --campaign {name}",
            replace_existing=True,
            misfire_grace_time=grace,
        )
        changed.append(name)
    for job in scheduler.get_jobs():
        if job.id.startswith(JOB_PREFIX) and job.id[len(JOB_PREFIX) :] not in config.campaigns:
            scheduler.remove_job(job.id)
    return changed


def run_campaign(config_path: str, campaign: str, due: dt.datetime | None = None) -> int:
    """The job: the same run cron would start, in this process, for the day it was due."""
    return RUNNER(config_path, campaign, due)


def _telling_due_time(executor: Any) -> Any:
    """Hand each run the time it was due. APScheduler 3 calls a job without it, and a run that
    takes 'today' from the wall clock would, after a catch-up past midnight, run the new day
    instead of the missed one. With coalescing, the last of the run times is the one run."""
    submit = executor.submit_job

    def submit_job(job: Any, run_times: list[dt.datetime]) -> None:
        if job.func_ref == JOB_FUNC and run_times and "due" not in job.kwargs:
            stamped = Job.__new__(Job)
            stamped.__setstate__(
                {**job.__getstate__(), "kwargs": {**job.kwargs, "due": run_times[-1]}}
            )
            stamped._scheduler, stamped._jobstore_alias = job._scheduler, job._jobstore_alias
            job = stamped
        submit(job, run_times)

    executor.submit_job = submit_job
    return executor


class RefusedJob(Exception):
    """A stored job that is not topic-sync's own: never loaded, never run."""


class _JobUnpickler(pickle.Unpickler):
    """Unpickles a stored job's state, refusing every class but the few a topic-sync job
    holds: whoever can write the job table must not be able to run code on this host."""

    _ALLOWED = {
        ("apscheduler.triggers.cron", "CronTrigger"),
        ("apscheduler.triggers.date", "DateTrigger"),
        ("zoneinfo", "ZoneInfo"),
        ("datetime", "datetime"),
        ("datetime", "timezone"),
        ("datetime", "timedelta"),
        ("datetime", "date"),
    }
    _ALLOWED_MODULES = ("apscheduler.triggers.cron.fields", "apscheduler.triggers.cron.expressions")

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name == "getattr":
            return _zoneinfo_unpickle_only
        if (module, name) in self._ALLOWED or module in self._ALLOWED_MODULES:
            return super().find_class(module, name)
        raise RefusedJob(f"a stored job refers to {module}.{name}, which is not topic-sync's")


def _zoneinfo_unpickle_only(obj: object, name: str) -> Any:
    """The one getattr a stored job needs (how ZoneInfo pickles itself)."""
    from zoneinfo import ZoneInfo

    if obj is ZoneInfo and name == "_unpickle":
        return ZoneInfo._unpickle  # type: ignore[attr-defined]
    raise RefusedJob(f"a stored job asks for getattr({obj!r}, {name!r})")


class TopicSyncJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """The PostgreSQL job store, loading only jobs that call topic-sync's own job function.

    APScheduler stores a job as a pickle naming a callable; anyone able to write the table
    could otherwise make the scheduler run anything. A refused job is logged and dropped by
    APScheduler (as any job it cannot restore). The table belongs to topic-sync's role alone
    (see the Security section of docs/operator-guide.md).
    """

    def _reconstitute_job(self, job_state: bytes) -> Any:
        state = _JobUnpickler(BytesIO(job_state)).load()
        if not isinstance(state, dict) or state.get("func") != JOB_FUNC:
            func = state.get("func") if isinstance(state, dict) else None
            raise RefusedJob(f"a stored job calls {func!r}, not topic-sync's {JOB_FUNC}")
        return super()._reconstitute_job(job_state)


_IO: Io | None = None  # set by serve(): where the runs' lines go, the process environment


def run_with_app(config_path: str, campaign: str, due: dt.datetime | None = None) -> int:
    """Run a campaign's day through the application layer; returns its exit code.

    The day is the date the job was due, in the campaign's time zone (today without one).
    """
    from topic_sync.app import commands
    from topic_sync.config.resolve import resolve

    io = _IO or Io(log=log.info, environ={}, sleep=PROCESS.sleep, should_stop=PROCESS.should_stop)
    try:
        resolved = resolve(
            {},
            {},
            config_path=Path(config_path),
            campaign_name=campaign,
            day="today",
            environ=io.environ,
            now=due or io.now(),
        )
        result = commands.run_day(resolved, io, republish=False, mark_published=False)
    except TopicSyncError as error:
        io.log(f"campaign {campaign}: {error.message}")
        return int(error.exit_code)
    io.log(f"campaign {campaign}: {result.day} {result.status}")
    return int(result.exit_code)


RUNNER: Runner = run_with_app


def watch(scheduler: BaseScheduler, notify: Callable[[str], None]) -> None:
    """Say what happened to each job, missed runs included."""

    def listener(event: JobEvent) -> None:
        name = (
            event.job_id[len(JOB_PREFIX) :] if event.job_id.startswith(JOB_PREFIX) else event.job_id
        )
        when = event.scheduled_run_time
        if event.code == EVENT_JOB_MISSED:
            notify(
                f"campaign {name}: the run due at {when} was missed by more than the grace "
                f"period; skipped (run it by hand with 'topic-sync run --campaign {name} "
                f"--date YYYY-MM-DD')"
            )
        elif event.code == EVENT_JOB_ERROR:
            notify(f"campaign {name}: the run due at {when} failed: {event.exception!r}")
        else:
            notify(f"campaign {name}: the run due at {when} ended with exit code {event.retval}")

    scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)


def describe(scheduler: BaseScheduler) -> list[str]:
    return [f"{job.name}: next run {job.next_run_time}" for job in scheduler.get_jobs()]


def resume_interrupted(
    scheduler: BaseScheduler, config: Config, engine: Engine, now: dt.datetime
) -> list[tuple[str, dt.date]]:
    """Queue, once, the runs a shutdown interrupted (or a kill left waiting to publish):
    today's (in the campaign's zone), or yesterday's while today has no run yet (a run that
    started late and was stopped after midnight). Each resumes its own day, not the day the
    scheduler restarts on."""
    from topic_sync import store

    resumed = []
    for name, campaign in config.campaigns.items():
        today = campaign.today(now)
        with engine.connect() as conn:
            recorded = store.campaign_by_name(conn, name)
            days = [
                (day, store.get_run(conn, recorded.id, day) if recorded else None)
                for day in (today, today - dt.timedelta(days=1))
            ]
        for day, record in days:
            if record is None:
                continue  # no run that day yet: look at the day before
            # A run stopped, or killed while it waited synced to publish (its rerun resumes
            # into the wait; one still waiting elsewhere holds the lock, and this is refused).
            if (
                record.status in (RunStatus.INTERRUPTED, RunStatus.WAITING)
                and record.publish_state is not PublishState.SENT
            ):
                scheduler.add_job(
                    JOB_FUNC,
                    "date",
                    run_date=now,
                    args=[str(config.path.resolve()), name],
                    # The day it resumes, as the time that day's job was due.
                    kwargs={"due": dt.datetime.combine(day, campaign.run_at, tzinfo=campaign.zone)},
                    id=f"resume:{name}:{day}",
                    name=f"topic-sync run --campaign {name} --date {day} (resumed)",
                    replace_existing=True,
                    misfire_grace_time=int(config.grace),
                )
                resumed.append((name, day))
            break  # the latest day with a run decides
    return resumed


def serve(config: Config, database_url: str, io: Io, shutdown: Shutdown) -> None:
    """Run the scheduler in the foreground until a stop is requested (SIGTERM/SIGINT)."""
    global _IO
    from topic_sync.store.db import make_engine

    _IO = io
    engine = make_engine(database_url)
    scheduler = make_scheduler(database_url)
    watch(scheduler, io.log)

    def restart_times(_event: JobEvent) -> None:
        """After each day, the next day's start follows the latest estimates."""
        for name in install_jobs(scheduler, config, start_times(config, engine, io.now())):
            io.log(f"campaign {name}: start moved to follow its sync estimate")

    scheduler.add_listener(restart_times, EVENT_JOB_EXECUTED)
    scheduler.start(paused=True)
    try:
        changed = install_jobs(scheduler, config, start_times(config, engine, io.now()))
        resumed = resume_interrupted(scheduler, config, engine, io.now())
        for name in changed:
            io.log(f"campaign {name}: schedule installed")
        for name, day in resumed:
            io.log(f"campaign {name}: resuming the run of {day} that a stop interrupted")
        for line in describe(scheduler):
            io.log(line)
        scheduler.resume()
        while not shutdown.requested.wait(1.0):
            pass
    finally:
        io.log("scheduler stopping: waiting for the run in flight to reach a safe point")
        scheduler.shutdown(wait=True)
        engine.dispose()
