"""One plain function per command: resolved settings in, a result that knows its exit code out.

The CLI parses and renders; the scheduler and the demo call these directly. Nothing here
prints or reads the environment: log lines go to `io.log`, the environment comes in `io`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from topic_sync import store
from topic_sync.app import metrics, report
from topic_sync.app.services import Io, close_fcm_client, database, fcm_client, services, state_dir
from topic_sync.config.needs import run_needs
from topic_sync.config.resolve import Resolved, Source
from topic_sync.config.table import SPECS, Kind, Settings, flag_of
from topic_sync.dates import format_duration
from topic_sync.engine import campaign, evidence, reconcile, retention, simulate, target
from topic_sync.engine.drain import process_owner
from topic_sync.engine.publish import Step
from topic_sync.engine.retry import RetryPolicy
from topic_sync.engine.run import RunOptions, RunResult
from topic_sync.engine.run import run_day as engine_run_day
from topic_sync.engine.simulate import Simulation
from topic_sync.engine.types import Deps
from topic_sync.errors import (
    BadInput,
    DeadlineReached,
    ExitCode,
    Interrupted,
    Refused,
    RemovalsUnconfirmed,
    TopicSyncError,
)
from topic_sync.fcm.target import FcmTarget
from topic_sync.inputs.audience import iter_audience, validate_token
from topic_sync.pool import (
    PoolPolicy,
    is_pool_topic,
    pool_topics,
    prefix_of,
    validate_pool,
)
from topic_sync.redact import mask_url, shorten
from topic_sync.states import Transport
from topic_sync.store import db

_Options = TypeVar("_Options")

EMBEDDED_IN_PRODUCTION = (
    "the embedded PostgreSQL is for trying topic-sync, not for changing production FCM: the "
    "subscription table is the only record of who is on each topic, and a folder on one "
    "machine is neither backed up nor shared"
)
EMBEDDED_FIX = (
    "set DATABASE_URL (or --database-url, or the file's database_url) to a real, backed-up "
    "PostgreSQL; to rehearse, point FCM_EMULATOR_HOST at an emulator; to do it all the same, "
    "pass --allow-embedded-database (TOPIC_SYNC_ALLOW_EMBEDDED_DATABASE=1)"
)


def embedded_in_production(settings: Settings) -> bool:
    """Whether the settings would change production FCM with the embedded PostgreSQL."""
    return settings.live and settings.database_url is None and settings.emulator_host is None


def refuse_embedded_in_production(settings: Settings, io: Io) -> None:
    """Refuse --live against production FCM on the embedded PostgreSQL unless the operator
    allowed it: a DATABASE_URL lost on the way (a cron env file, a typo) must not quietly
    make a private folder the record of production's topics."""
    if not embedded_in_production(settings):
        return
    if not settings.allow_embedded_database:
        raise Refused(f"{EMBEDDED_IN_PRODUCTION}. Nothing was changed. To fix: {EMBEDDED_FIX}")
    io.log(f"WARNING: {EMBEDDED_IN_PRODUCTION} (allowed by --allow-embedded-database)")


def retry_policy(settings: Settings) -> RetryPolicy:
    try:
        return RetryPolicy(
            min_wait=settings.retry_min_wait,
            max_wait=settings.retry_max_wait,
            max_retries=settings.max_retries,
        )
    except ValueError as error:
        raise BadInput(str(error)) from None


def work_settings(settings: Settings) -> dict[str, Any]:
    """What the batch drainer takes, for a run or a repair."""
    return {
        "retry": retry_policy(settings),
        "concurrency": settings.concurrency,
        "deadline": settings.deadline,
        "max_dead": settings.max_dead,
    }


def engine_options(options: type[_Options], settings: Settings, **given: Any) -> _Options:
    """The engine's `options` (a dataclass) from the settings named as its fields, plain
    values, with `given` for the rest and over them. A setting reaches the engine by a
    field of its own name: a new setting touches the table and the code that uses it."""
    names = {f.name for f in dataclasses.fields(options)}  # type: ignore[arg-type]
    same = {name: value for name, value in settings.as_dict().items() if name in names}
    return options(**{**same, **work_settings(settings), **given})


def run_options(settings: Settings, **given: Any) -> RunOptions:
    """A day's run options from the settings (see engine_options), `given` for the rest."""
    typed = {
        "pool_policy": PoolPolicy(settings.pool_policy),
        "convention_keys": (settings.message_type_key, settings.message_version_key),
        "publish_at": _time_of_day(settings.publish_at),
        "publish_by": _time_of_day(settings.publish_by),
    }
    return engine_options(RunOptions, settings, **{**typed, **given})


@contextlib.contextmanager
def exported(
    settings: Settings, io: Io, command: str, campaign_label: str
) -> Iterator[metrics.Finished]:
    """Export the command's metrics when it ends, however it ends (--metrics-file,
    --pushgateway). The caller fills in the result; an export that fails is logged and
    listed in `Finished.problems`, never raised: it does not change the outcome."""
    exports = metrics.Exports.of(settings)
    finished = metrics.Finished(command, campaign_label, settings.live, started=io.now())
    try:
        yield finished
    except BaseException as error:
        finished.error = error
        code = error.exit_code if isinstance(error, TopicSyncError) else ExitCode.FAILED
        finished.exit_code = code
        raise
    finally:
        finished.ended = io.now()
        if exports.wanted:
            for problem in exports.send(finished):
                io.log(f"WARNING: metrics not exported: {problem}")
            finished.problems = list(exports.problems)


def tally_pacer(finished: metrics.Finished, deps: Deps) -> None:
    if deps.pacer is not None:
        pacer = deps.pacer
        finished.requests, finished.throttled = pacer.answered, pacer.throttled
        finished.pacer_wait = pacer.waited


# --- run ------------------------------------------------------------------------------------


def run_day(
    resolved: Resolved,
    io: Io,
    *,
    republish: bool = False,
    mark_published: bool = False,
    publish_late: bool = False,
    step: Step = Step.SYNC_AND_PUBLISH,
    backfill: bool = False,
    full_tokens: bool = False,
) -> RunResult:
    """Sync the day's topic to the audience and publish the day's message once."""
    resolved.check_date_window(backfill=backfill)
    s = resolved.settings
    needs = run_needs(resolved)
    audience = needs.audience
    validate_pool(needs.topic_prefix, s.pool_size)
    spec = campaign_spec(resolved)
    try:
        options = run_options(
            s,
            day=needs.day,
            prefix=needs.topic_prefix,
            audience_path=audience.path,
            message_path=needs.message,
            republish=republish,
            mark_published=mark_published,
            full_tokens=full_tokens,
            audience_query=audience.query,
            audience_database_url=audience.database_url,
            stdin=io.stdin,
            campaign=spec.name,
            pool_size_given=spec.pool_size_given,
            timezone=spec.timezone,
            evidence_dir=state_dir(s, io),
            publish_late=publish_late,
            step=step,
        )
    except ValueError as error:
        raise BadInput(str(error)) from None
    refuse_embedded_in_production(s, io)
    try:
        with exported(s, io, "run", needs.topic_prefix) as finished, services(s, io) as deps:
            try:
                result = engine_run_day(options, deps)
            finally:
                tally_pacer(finished, deps)
            finished.run, finished.exit_code = result, result.exit_code
    except (RemovalsUnconfirmed, DeadlineReached, Interrupted) as error:
        finish = how_to_finish(resolved, error, backfill=backfill)
        raise type(error)(f"{error.message}. {finish}") from error
    result.metrics_errors = finished.problems
    return result


def _time_of_day(value: str | None) -> dt.time | None:
    """A checked HH:MM setting as a time (the settings table checked its form)."""
    return None if value is None else dt.time.fromisoformat(value)


# The settings that say which day of which campaign a run is: a rerun must repeat them.
IDENTITY = ("topic_prefix", "pool_size", "audience", "audience_query", "message")
# Where a repair goes: it must reach the same FCM and database as the run did.
TARGET = (
    "emulator_host",
    "project",
    "transport",
    "database_url",
    "embedded_dir",
    "allow_embedded_database",
)


def how_to_finish(resolved: Resolved, error: TopicSyncError, *, backfill: bool = False) -> str:
    """The exact commands that finish a day a run left unfinished: a rerun of the day (with
    the date spelled out, and what the command line gave), after a live reconcile of the
    day's topic when removals withheld it. Never a secret in clear: a password given on the
    command line is shown as ***, for the operator to fill in."""
    assert resolved.day is not None
    day = resolved.day.isoformat()
    scope = ["--date", day, *(["--backfill"] if backfill else [])]
    if resolved.config is not None:
        scope += ["--config", str(resolved.config.path)]
        if resolved.campaign is not None and len(resolved.config.campaigns) > 1:
            scope += ["--campaign", resolved.campaign.name]
    rerun = ["topic-sync", "run", *scope, *_given(resolved, lambda name: True), "--live"]
    if not isinstance(error, RemovalsUnconfirmed):
        return f"To finish {day}: {shlex.join(rerun)}"
    s = resolved.settings
    repair = ["topic-sync", "reconcile", *scope]
    if resolved.config is None or resolved.sources.get("topic_prefix") is not Source.FILE:
        repair += ["--topic-prefix", str(s.topic_prefix), "--pool-size", str(s.pool_size)]
    repair += [*_given(resolved, lambda name: name in TARGET), "--live"]
    return f"To finish {day}: {shlex.join(repair)}, then {shlex.join(rerun)}"


def _given(resolved: Resolved, wanted: Callable[[str], bool]) -> list[str]:
    """The options that give the wanted settings as the command line did (and the run's
    identity from the environment when no file gives it), but --live. A secret one (a URL
    with a password) is shown masked: leaving it out would send the rerun elsewhere."""
    args: list[str] = []
    for name, value in resolved.settings.as_dict().items():
        spec, source = SPECS[name], resolved.sources.get(name, Source.DEFAULT)
        given = source is Source.FLAG or (
            name in IDENTITY and source is Source.ENV and resolved.config is None
        )
        if not given or not wanted(name) or value is None or value is False or name == "live":
            continue
        args.append(flag_of(name))
        if spec.secret:
            args.append(mask_url(str(value)) or "")
        elif spec.kind is Kind.DURATION:
            args.append(format_duration(value))
        elif spec.kind is not Kind.FLAG:
            args.append(str(value))
    return args


# --- simulate ---------------------------------------------------------------------------------


def simulate_pool(
    resolved: Resolved, io: Io, sources: Sequence[str], *, quota: float
) -> Simulation:
    """What the pool size and policy would have cost over past audience files, next to the
    ordinal rule; in temporary tables of the database, changing nothing."""
    s = resolved.settings
    if not quota > 0:
        raise BadInput(f"--quota must be a number of requests per second above 0, not {quota}")
    prefix = s.topic_prefix or "topic"
    validate_pool(prefix, s.pool_size)
    files, passed_over = simulate.audience_history(sources)
    for path in passed_over:
        io.log(f"note: {path}: no date in its name, passed over")
    io.log(
        f"simulate: {len(files)} audiences, {files[0].day} to {files[-1].day}; pool of "
        f"{s.pool_size}, policy {s.pool_policy}, rest {format_duration(s.rest_period)}; "
        "in temporary tables, changing nothing"
    )
    with database(s, io) as engine:
        return simulate.simulate(
            engine,
            files,
            prefix=prefix,
            pool_size=s.pool_size,
            policy=PoolPolicy(s.pool_policy),
            rest=dt.timedelta(seconds=s.rest_period),
            quota=quota,
            run_at=dt.time.fromisoformat(s.run_at),
            zone=ZoneInfo(s.timezone),
            token_column=s.token_column,
            log=io.log,
        )


# --- repairs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The topics a repair covers: --topic, else the pool of the prefix (or the topic
    --date was planned on), else every topic the database knows."""

    topics: tuple[str, ...] = ()
    day: str | None = None


def campaign_spec(resolved: Resolved) -> campaign.CampaignSpec:
    """What the settings say of the campaign (they must name a topic prefix)."""
    s = resolved.settings
    assert s.topic_prefix is not None
    return campaign.CampaignSpec(
        prefix=s.topic_prefix,
        pool_size=s.pool_size,
        name=resolved.campaign.name if resolved.campaign else None,
        pool_size_given=resolved.sources.get("pool_size", Source.DEFAULT) is not Source.DEFAULT,
        timezone=resolved.campaign.timezone if resolved.campaign else None,
    )


def repair_topics(engine: Engine, resolved: Resolved, scope: Scope, io: Io) -> tuple[str, ...]:
    """The topics a repair covers. A campaign's pool is its recorded one (a configured pool
    size must agree with it); a prefix with no recorded pool covers the topics of that
    prefix the database knows, never topics that were never used. A date covers the topic
    its run recorded (whatever the pool policy chose); a date never planned, none."""
    if scope.topics:
        return scope.topics
    s = resolved.settings
    if s.topic_prefix:
        spec = campaign_spec(resolved)
        validate_pool(spec.prefix, spec.pool_size)
        with engine.connect() as conn:
            found = campaign.find(conn, spec)
            if resolved.day is not None:
                campaign.pool_size_of(conn, spec, found)
                recorded = store.recorded_topic(conn, found.id, resolved.day) if found else None
                if recorded is None:
                    raise BadInput(
                        f"--date {resolved.day}: campaign {spec.campaign_name!r} has no run of "
                        "that date that chose a topic (a date's topic is chosen when it runs); "
                        "give --topic, or leave out --date to cover the whole pool"
                    )
                return (recorded,)
            if found is not None and found.pool_size is not None:
                pool_size, _ = campaign.pool_size_of(conn, spec, found)
                return tuple(pool_topics(spec.prefix, pool_size))
            known = [t for t in store.topics_with_rows(conn) if is_pool_topic(spec.prefix, t)]
        what = "no campaign is recorded" if found is None else "its pool size is not recorded yet"
        io.log(
            f"note: {what} for prefix {spec.prefix!r}: covering the {len(known)} topics of "
            "it the database knows"
        )
        return tuple(known)
    if resolved.day is not None:
        raise BadInput("--date needs --topic-prefix")
    with engine.connect() as conn:
        return tuple(store.topics_with_rows(conn))


@dataclass(frozen=True)
class ReconcileOutcome:
    result: reconcile.ReconcileResult
    metrics_errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.result.finished else ExitCode.DEADLINE

    @property
    def problem(self) -> str | None:
        if self.result.finished:
            return None
        return "reconcile's deadline passed with work left; run it again"


def reconcile_topics(
    resolved: Resolved,
    io: Io,
    scope: Scope,
    *,
    full: bool = False,
    audit: bool = False,
    sample: int | None = None,
    backfill: bool = False,
) -> ReconcileOutcome:
    """Repair what runs left owed; never publishes."""
    resolved.check_date_window(backfill=backfill)
    if sample and not audit:
        raise BadInput("--sample goes with --audit")
    s = resolved.settings
    if audit and s.transport == Transport.LEGACY_IID:
        io.log("note: --audit lists subscriptions through the v1 API whatever the transport")
    refuse_embedded_in_production(s, io)
    command = "audit" if audit else "reconcile"
    with exported(s, io, command, s.topic_prefix or "all") as finished, services(s, io) as deps:
        try:
            topics = repair_topics(deps.engine, resolved, scope, io)
            prefixes = {prefix_of(topic) for topic in topics}
            if not s.topic_prefix and len(prefixes) == 1:
                finished.campaign = prefixes.pop()
            options = engine_options(
                reconcile.ReconcileOptions,
                s,
                topics=topics,
                full=full,
                audit=audit,
                sample=sample,
            )
            outcome = ReconcileOutcome(reconcile.reconcile(options, deps))
        finally:
            tally_pacer(finished, deps)
        finished.reconcile, finished.exit_code = outcome.result, outcome.exit_code
    return ReconcileOutcome(outcome.result, finished.problems)


@dataclass(frozen=True)
class ForgetOutcome:
    forgotten: int
    removals_queued: int
    topics: list[str]
    repaired: ReconcileOutcome | None = None
    restored: int | None = None  # --undo: tokens taken off the suppression list
    removals_lifted: int = 0  # --undo: owed removals the forget had queued, lifted
    live: bool = False

    @property
    def exit_code(self) -> ExitCode:
        return self.repaired.exit_code if self.repaired else ExitCode.OK

    def summary(self) -> dict[str, Any]:
        if self.restored is not None:
            return {
                "live": self.live,
                "restored": self.restored,
                "removals_lifted": self.removals_lifted,
            }
        out: dict[str, Any] = {
            "live": self.live,
            "forgotten": self.forgotten,
            "removals_queued": self.removals_queued,
            "topics": self.topics,
        }
        if self.repaired is not None:
            out["reconcile"] = self.repaired.result.summary()
        return out


def forget(
    resolved: Resolved,
    io: Io,
    tokens: Sequence[str],
    from_file: Path | None,
    *,
    undo: bool = False,
) -> ForgetOutcome:
    """Mark tokens gone, queue their removal everywhere and remove them now; a dry run
    (without `live`) only counts what it would do.

    With `undo`, take them off the suppression list instead and lift the removals the
    forget queued that are still owed: later audiences include them again."""
    for token in tokens:
        reason = validate_token(token)
        if reason:
            raise BadInput(f"token {shorten(token)!r}: {reason}")
    if not tokens and not from_file:
        raise BadInput("give tokens to forget, or --from-file")
    s = resolved.settings
    refuse_embedded_in_production(s, io)
    dry = "" if s.live else " (dry run: nothing changed; pass --live to apply)"
    with services(s, io) as deps:
        source: Iterable[str] = itertools.chain(
            tokens, iter_audience(from_file) if from_file else ()
        )
        if undo:
            restored, lifted = reconcile.unforget(deps, source, live=s.live)
            verb = "taken" if s.live else "would be taken"
            io.log(
                f"{restored} tokens {verb} off the suppression list and {lifted} owed removals "
                f"lifted{dry}; the next audience that holds them subscribes them again"
            )
            return ForgetOutcome(0, 0, [], restored=restored, removals_lifted=lifted, live=s.live)
        marked, queued, owing = reconcile.forget(deps, source, live=s.live)
        verb = "forgot" if s.live else "would forget"
        io.log(f"{verb} {marked} tokens; {queued} removals queued on {len(owing)} topics{dry}")
        repaired = None
        if s.live and owing:
            options = engine_options(reconcile.ReconcileOptions, s, topics=tuple(owing), live=True)
            repaired = ReconcileOutcome(reconcile.reconcile(options, deps))
    return ForgetOutcome(marked, queued, owing, repaired, live=s.live)


# --- the FCM target ---------------------------------------------------------------------------


def target_show(resolved: Resolved, io: Io) -> FcmTarget | None:
    with database(resolved.settings, io) as engine, engine.connect() as conn:
        return target.bound_target(conn)


def target_change(resolved: Resolved, io: Io, *, reset: bool) -> target.TargetChange:
    """Re-bind the state to the settings' target, or reset it for that target."""
    s = resolved.settings
    with database(s, io) as engine:
        client = fcm_client(s, io)
        try:
            change = target.reset if reset else target.rebind
            return change(engine, client.target, live=s.live)
        finally:
            close_fcm_client(client)


# --- reports ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportQuery:
    """What `report` lists: the run summary, or failed tokens matching the filters."""

    date: str | None = None
    run_id: int | None = None
    code: str | None = None
    op: str | None = None
    list_failed: bool = False
    list_runs: bool = False
    list_dead: bool = False
    include_resolved: bool = False
    limit: int | None = None

    def validate(self) -> None:
        others = any(v is not None for v in (self.date, self.run_id, self.code, self.op))
        if self.list_dead and (others or self.list_failed or self.list_runs):
            raise BadInput(
                "--dead lists dead tokens: it does not combine with --runs, "
                "--failed, --date, --run, --code or --op"
            )

    @property
    def failures(self) -> bool:
        filtered = any(v is not None for v in (self.date, self.run_id, self.code, self.op))
        return (filtered or self.list_failed) and not self.list_runs


@dataclass(frozen=True)
class ReportOutcome:
    runs: list[report.RunSummary] = field(default_factory=list)
    failures: list[report.FailedToken] | None = None  # None: the run summary was asked for
    dead: list[report.DeadToken] | None = None  # --dead
    # With no filter and no --runs: each campaign's latest run and its failed tokens.
    overview: list[report.CampaignOverview] | None = None
    exit_code: ExitCode = ExitCode.OK


def answer_report(resolved: Resolved, io: Io, query: ReportQuery) -> ReportOutcome:
    prefix = resolved.settings.topic_prefix
    query.validate()
    with database(resolved.settings, io) as engine:
        everything = query.include_resolved and query.limit is None
        if query.list_dead:
            limit = None if everything else query.limit or report.DEFAULT_FAILURE_LIMIT
            return ReportOutcome(dead=report.dead_tokens(engine, limit))
        if not query.failures:
            limit = None if everything else query.limit or report.DEFAULT_RUN_LIMIT
            runs = report.run_summaries(engine, prefix=prefix, limit=limit)
            if query.list_runs:
                return ReportOutcome(runs=runs)
            per_group = None if everything else query.limit or report.DEFAULT_GROUP_TOKENS
            overviews = report.overview(engine, prefix=prefix, per_group=per_group)
            return ReportOutcome(runs=runs, overview=overviews)
        flt = report.FailureFilter(
            date=resolved.day,
            run_id=query.run_id,
            code=query.code,
            op=query.op,
            prefix=prefix,
            include_resolved=query.include_resolved,
            limit=None if everything else query.limit or report.DEFAULT_FAILURE_LIMIT,
        )
        return ReportOutcome(failures=report.failed_tokens(engine, flt))


@dataclass(frozen=True)
class StatusOutcome:
    latest: list[report.RunSummary]
    exit_code: ExitCode


def status(resolved: Resolved, io: Io) -> StatusOutcome:
    """The latest run of each campaign; not OK when one did not publish (or none ran). A
    publish FCM accepted that only this host's evidence file records shows as such."""
    with database(resolved.settings, io) as engine:
        latest = report.latest_runs(engine, resolved.settings.topic_prefix)
    found = [proof for _, proof in evidence.pending(state_dir(resolved.settings, io))]
    latest = report.with_evidence(latest, found)
    return StatusOutcome(latest, report.status_exit_code_of(latest))


# --- campaigns ----------------------------------------------------------------------------------


def _check_free(conn: Any, record: store.CampaignRecord, new: dict[str, object]) -> None:
    """A new name or prefix must not be another campaign's."""
    for key, find in (("name", store.campaign_by_name), ("prefix", store.campaign_by_prefix)):
        if key in new:
            other = find(conn, str(new[key]))
            if other is not None and other.id != record.id:
                raise BadInput(f"{key} {new[key]!r} belongs to campaign {other.name!r}")


@dataclass(frozen=True)
class CampaignView:
    """A campaign's record, every change to it, and the FCM target its state belongs to."""

    record: store.CampaignRecord
    changes: list[store.CampaignChangeRow]
    target: FcmTarget | None


def campaign_show(resolved: Resolved, io: Io, name: str | None) -> list[CampaignView]:
    """Every campaign's record (or the named one's), with its history of changes."""
    wanted = name or (resolved.campaign.name if resolved.campaign else None)
    with database(resolved.settings, io) as engine, engine.connect() as conn:
        bound = target.bound_target(conn)
        records = store.list_campaigns(conn)
        if wanted is not None:
            records = [r for r in records if r.name == wanted]
            if not records:
                raise BadInput(
                    f"no campaign {wanted!r} is recorded (see 'topic-sync campaign show')"
                )
        return [CampaignView(r, store.campaign_changes(conn, r.id), bound) for r in records]


@dataclass(frozen=True)
class CampaignUpdate:
    """What `campaign update` changed (or, in a dry run, would change)."""

    before: store.CampaignRecord
    after: dict[str, object]
    changed: dict[str, tuple[object, object]]  # field -> (was, becomes)
    live: bool

    def summary(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "campaign": self.before.name,
            "before": self.before.identity(),
            "after": self.after,
            "changed": {k: {"was": a, "becomes": b} for k, (a, b) in self.changed.items()},
        }


def campaign_update(
    resolved: Resolved,
    io: Io,
    name: str | None,
    *,
    new_name: str | None = None,
    timezone: str | None = None,
) -> CampaignUpdate:
    """Change a campaign's name, prefix, pool size or time zone, recorded; dry run unless
    `live`. New values come from the options, else from the configuration's campaign.

    Taken under the campaign's lock, so no run of it is in flight: from the change on,
    runs whose configuration still says the old values are refused (exit 2)."""
    s = resolved.settings
    name = name or (resolved.campaign.name if resolved.campaign else None)
    if name is None:
        raise BadInput("name the campaign: topic-sync campaign update NAME (or --config)")
    given = {
        key: getattr(s, setting)
        for key, setting in (("prefix", "topic_prefix"), ("pool_size", "pool_size"))
        if resolved.sources.get(setting, Source.DEFAULT) is not Source.DEFAULT
    }
    zone = timezone or (resolved.campaign.timezone if resolved.campaign else None)
    if zone is not None:
        problem = SPECS["timezone"].check(zone)
        if problem:
            raise BadInput(f"--timezone: {problem}")
        given["timezone"] = zone
    if new_name is not None:
        if not new_name.strip():
            raise BadInput("--name must not be empty")
        given["name"] = new_name
    with database(s, io) as engine:
        with engine.connect() as conn:
            before = store.campaign_by_name(conn, name)
        if before is None:
            raise BadInput(
                f"no campaign {name!r} is recorded (a campaign is recorded by its first live "
                "run; see 'topic-sync campaign show')"
            )
        pool = given.get("pool_size", before.pool_size)
        validate_pool(str(given.get("prefix", before.prefix)), pool if isinstance(pool, int) else 1)
        changed = {
            key: (before.identity()[key], value)
            for key, value in given.items()
            if before.identity()[key] != value
        }
        new_values = {key: becomes for key, (_, becomes) in changed.items()}
        with contextlib.ExitStack() as held:
            if s.live and changed:  # no run of the campaign is in flight while it changes
                lock = db.campaign_lock(before.name)
                held.enter_context(db.advisory_lock(engine, lock, what="run or campaign update"))
            with engine.begin() as conn:
                _check_free(conn, before, new_values)
                if s.live and changed:
                    if store.campaign_by_name(conn, name, lock=True) != before:
                        raise BadInput(f"campaign {name!r} changed meanwhile; run this again")
                    owner = process_owner("campaign update")
                    after = store.update_campaign(conn, before, new_values, owner).identity()
                else:
                    after = {**before.identity(), **new_values}
    verb = "changed" if s.live else "would change (dry run; pass --live to apply)"
    if not changed:
        io.log(f"campaign {name!r}: nothing to change")
    for key, (was, becomes) in changed.items():
        io.log(f"campaign {name!r}: {key} {verb} from {was} to {becomes}")
    if "prefix" in changed or "pool_size" in changed:
        io.log(
            "note: runs whose configuration still says the old values are refused from now "
            "on (exit 2); the campaign's dates already published stay published. Topics no "
            "longer in the pool keep their members but are never published to again"
        )
    return CampaignUpdate(before, after, changed, s.live)


# --- retention ----------------------------------------------------------------------------------


def purge(resolved: Resolved, io: Io) -> retention.PurgeResult:
    """Delete per-token failure rows past retention (`retention`, --older-than); with `live`
    only, else count them."""
    s = resolved.settings
    problem = SPECS["retention"].check(s.retention)
    if problem:
        raise BadInput(f"--older-than (retention) {problem}")
    with database(s, io) as engine:
        result = retention.purge(
            engine, older_than=s.retention, live=s.live, now=io.now(), should_stop=io.should_stop
        )
    verb = "deleted" if result.live else "would delete (dry run; pass --live to delete)"
    io.log(
        f"purge: {verb} {result.failures} failure rows last seen before "
        f"{result.summary()['cutoff']}; run summaries, subscriptions and tokens kept"
    )
    return result


# --- the schema ---------------------------------------------------------------------------------


def check_database(resolved: Resolved, io: Io) -> None:
    """Reachable and migrated, or a message saying what to do."""
    with database(resolved.settings, io):
        pass


def stop_embedded(resolved: Resolved, io: Io) -> tuple[Path, bool]:
    """Stop the embedded PostgreSQL of the settings' folder: the folder, and whether a server
    ran there (as root, pg_ctl runs as the server's system user, as PostgreSQL requires)."""
    from topic_sync.app.services import embedded_base
    from topic_sync.store.embedded import EmbeddedServer

    server = EmbeddedServer(embedded_base(resolved.settings, io))
    running = server.pid() is not None
    if running:
        server.stop()
    return server.base, running


def db_upgrade(resolved: Resolved, io: Io) -> str:
    """Create or migrate the schema; returns the revision it is at."""
    from topic_sync.app.services import database_url, reaching

    url = database_url(resolved.settings, io)
    with reaching(url):
        db.upgrade(url)
    return db.head_revision()
