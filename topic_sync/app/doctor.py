"""`topic-sync doctor`: check, changing nothing, that a `run` with the same options could work.

Each check is a plain function over what it looks at (the resolved settings, a database
engine, a firebase-admin app, a file) and returns a `Check`: a status, what it found, and
for a failure a concrete fix. `doctor` builds those dependencies the way `run` does and runs
the checks in order; a check whose prerequisite failed is skipped (that failure is already
reported). Nothing here writes: the database is read in READ ONLY transactions that are
rolled back (no migration, no run row, no binding of the target), and FCM sees a list of a
dummy registration's topics and a validate_only send, which delivers nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import firebase_admin
import google.auth.exceptions
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from topic_sync import store
from topic_sync.app.commands import (
    EMBEDDED_FIX,
    EMBEDDED_IN_PRODUCTION,
    campaign_spec,
    embedded_in_production,
    retry_policy,
)
from topic_sync.app.services import (
    POOL_HEADROOM,
    Io,
    auth_problem,
    close_fcm_client,
    database_url,
    fcm_client,
    open_engine,
)
from topic_sync.config.needs import AudienceKind, AudienceSource, audience_source, run_problems
from topic_sync.config.resolve import Resolved
from topic_sync.config.table import Settings
from topic_sync.dates import format_duration
from topic_sync.engine import campaign
from topic_sync.engine.estimate import estimate, late_warning, sync_start
from topic_sync.engine.publish import Window
from topic_sync.engine.run import audience_connection
from topic_sync.errors import (
    BadInput,
    CampaignMismatch,
    CredentialsError,
    ExitCode,
    TopicSyncError,
)
from topic_sync.fcm.client import FcmClient
from topic_sync.fcm.sdk_bridge import mint_token
from topic_sync.fcm.sdk_messaging import DOCTOR_TOKEN, ApiAnswer, probe_topic_api
from topic_sync.fcm.target import FcmTarget
from topic_sync.fcm.wire import TOPIC_MANAGEMENT_QUOTA
from topic_sync.inputs import arrival, manifest
from topic_sync.inputs.audience import (
    UNTERMINATED,
    audience_format,
    ends_with_newline,
    iter_audience,
)
from topic_sync.inputs.message import load_message
from topic_sync.pool import (
    Candidate,
    PoolPolicy,
    is_resting,
    pool_topics,
    topic_for,
    validate_pool,
)
from topic_sync.redact import mask_url, scrub
from topic_sync.states import FcmApi, Transport
from topic_sync.store import audience_query_column, bound_target, db

AUDIENCE_SAMPLE = 1000  # tokens of the audience file checked (a run checks every line)
MIN_SERVER_VERSION = 150000  # PostgreSQL 15

NAMES = (
    "config",
    "pool",
    "database",
    "schema",
    "grants",
    "campaign",
    "credentials",
    "target",
    "fcm-api",
    "message",
    "audience",
)
"""Every check, in the order they run and are shown."""


class CheckStatus(enum.StrEnum):
    """How one check of `topic-sync doctor` came out. Only FAIL makes it not ready."""

    OK = "ok"
    WARN = "warn"  # works, but something deserves a look
    FAIL = "fail"  # a run would fail (or do harm): fix it first
    SKIP = "skip"  # not checked: what it needs failed (that failure is reported)


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "detail": self.detail,
            "fix": self.fix,
        }


def ok(name: str, detail: str) -> Check:
    return Check(name, CheckStatus.OK, detail)


def warn(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, CheckStatus.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, CheckStatus.FAIL, detail, fix)


def skip(name: str, why: str) -> Check:
    return Check(name, CheckStatus.SKIP, f"not checked: {why}")


@dataclass(frozen=True)
class DoctorResult:
    checks: list[Check]
    day: dt.date | None = None

    @property
    def ready(self) -> bool:
        return all(c.status is not CheckStatus.FAIL for c in self.checks)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ready else ExitCode.NOT_READY

    def summary(self) -> dict[str, Any]:
        return {
            "version": 1,
            "kind": "doctor",
            "ready": self.ready,
            "exit_code": int(self.exit_code),
            "date": self.day.isoformat() if self.day else None,
            "checks": [c.to_json() for c in self.checks],
        }


# --- settings ---------------------------------------------------------------------------------


def check_config(
    resolve: Callable[[], Resolved], *, backfill: bool
) -> tuple[Check, Resolved | None]:
    """The configuration file parses and validates, and the options resolve with it."""
    try:
        resolved = resolve()
        resolved.check_date_window(backfill=backfill)
    except TopicSyncError as error:
        return (
            fail(
                "config",
                error.message,
                "correct the file, key or option named above (a campaign's settings are "
                "shown by 'topic-sync config show')",
            ),
            None,
        )
    if resolved.config is None:
        return ok("config", "no configuration file: flags, environment and defaults"), resolved
    where = f"{resolved.config.path}"
    if resolved.campaign is not None:
        where += f", campaign {resolved.campaign.name!r} ({resolved.campaign.timezone})"
    return ok("config", f"{where}: valid"), resolved


def check_pool(settings: Settings, day: dt.date | None) -> tuple[Check, str | None]:
    """The prefix and pool size FCM accepts, how the day's topic is picked, pacing against
    the quota. Returns the topic the message is validated for: the ordinal one (under the
    cost policy the day's own is chosen once its audience is loaded; the campaign check
    names the one a date already planned on)."""
    name = "pool"
    assert settings.topic_prefix is not None  # else the run's needs fail the check
    try:
        validate_pool(settings.topic_prefix, settings.pool_size)
        retry_policy(settings)
    except TopicSyncError as error:
        return fail(name, error.message, "choose a prefix and pool size FCM accepts"), None
    topic = topic_for(settings.topic_prefix, settings.pool_size, day) if day else None
    if settings.pool_policy == PoolPolicy.ORDINAL:
        picked = f"; {day} uses {topic} (pool policy ordinal)" if topic else ""
    else:
        rest = format_duration(settings.rest_period)
        picked = (
            f"; pool policy cost: {day or 'a date'} gets the topic needing the fewest "
            f"operations among those with no message in the last {rest} (--rest-period), "
            "chosen when its audience is loaded"
        )
    detail = (
        f"{settings.pool_size} topics {settings.topic_prefix}-0..{settings.pool_size - 1}"
        + picked
        + f"; {settings.rate_limit:g} requests/s, {settings.concurrency} batches in flight"
    )
    if settings.rate_limit > TOPIC_MANAGEMENT_QUOTA:
        return (
            warn(
                name,
                f"{detail}: --rate-limit is above FCM's published quota of "
                f"{TOPIC_MANAGEMENT_QUOTA}/s per project",
                f"expect 429 answers (the pacer backs off), or lower --rate-limit to "
                f"{TOPIC_MANAGEMENT_QUOTA} unless Google raised this project's quota",
            ),
            topic,
        )
    return ok(name, detail), topic


# --- the database -----------------------------------------------------------------------------


def _db_error(error: SQLAlchemyError, url: str) -> str:
    reason = str(error.orig) if isinstance(error, DBAPIError) else str(error)
    return scrub(reason, url).strip().replace("\n", " ")


def check_database(engine: Engine, url: str, settings: Settings) -> Check:
    """Reachable within the connect timeout; the server's version and connection room."""
    name = "database"
    try:
        with db.read_only(engine) as conn:
            facts = db.server_facts(conn)
    except SQLAlchemyError as error:
        return fail(
            name,
            f"cannot reach {mask_url(url)} (connect timeout {db.CONNECT_TIMEOUT_SECONDS}s): "
            f"{_db_error(error, url)}",
            "check DATABASE_URL (or --database-url / the file's database_url): host, port, "
            "database name, user and password, and that the server accepts this host",
        )
    detail = (
        f"{mask_url(url)}: PostgreSQL {facts.version}, database {facts.database!r} "
        f"as {facts.user!r}"
    )
    if facts.version_num < MIN_SERVER_VERSION:
        return fail(name, detail, "topic-sync needs PostgreSQL 15 or newer: upgrade the server")
    if not facts.temporary:
        return fail(
            name,
            f"{detail}: the role may not create temporary tables (the audience is loaded into one)",
            f"GRANT TEMPORARY ON DATABASE {facts.database} TO {facts.user}",
        )
    needed = settings.concurrency + POOL_HEADROOM
    room = facts.max_connections - facts.reserved_connections - facts.connections_in_use
    if needed > room:
        return warn(
            name,
            f"{detail}; a run opens up to {needed} connections (--concurrency "
            f"{settings.concurrency} + {POOL_HEADROOM}), the server has room for {room} more "
            f"(max_connections {facts.max_connections}, {facts.connections_in_use} in use)",
            "lower --concurrency, or raise the server's max_connections",
        )
    if embedded_in_production(settings) and not settings.allow_embedded_database:
        return fail(
            name, f"{detail}: {EMBEDDED_IN_PRODUCTION}; run would refuse (exit 5)", EMBEDDED_FIX
        )
    if settings.database_url is None and settings.emulator_host is None:
        return warn(
            name,
            f"{detail}: the embedded PostgreSQL, for trying topic-sync, not for running it "
            "against production FCM",
            "set DATABASE_URL to a real, backed-up PostgreSQL",
        )
    return ok(name, f"{detail}; room for the {needed} connections a run opens")


def check_schema(engine: Engine) -> Check:
    """Alembic's current revision against this release's head, without upgrading."""
    name = "schema"
    head = db.head_revision()
    with db.read_only(engine) as conn:
        current = db.current_revision(conn)
    if current == head:
        return ok(name, f"migrated to head ({head})")
    if current is None:
        return fail(
            name, f"not migrated (this release needs {head})", "run 'topic-sync db upgrade'"
        )
    if db.is_known_revision(current):
        return fail(
            name,
            f"at {current}, behind this release's head {head}",
            "run 'topic-sync db upgrade' (take a backup first)",
        )
    return fail(
        name,
        f"at {current}, which this release does not know: a newer topic-sync migrated it",
        "run the topic-sync release that migrated this database",
    )


def check_grants(engine: Engine) -> Check:
    """SELECT, INSERT, UPDATE and DELETE on each of topic-sync's tables."""
    name = "grants"
    tables = (*db.schema_tables(), *db.OPTIONAL_TABLES)
    with db.read_only(engine) as conn:
        user = db.server_facts(conn).user
        absent = db.missing_tables(conn, tables)
        missing = db.missing_privileges(conn, tables)
    if missing:
        lacking = "; ".join(f"{t}: {', '.join(p)}" for t, p in sorted(missing.items()))
        grants = " ".join(
            f"GRANT {', '.join(p)} ON {t} TO {user};" for t, p in sorted(missing.items())
        )
        return fail(name, f"role {user!r} lacks {lacking}", grants)
    checked = len(tables) - len(absent)
    required = [t for t in absent if t not in db.OPTIONAL_TABLES]
    if required:
        return skip(name, f"tables missing ({', '.join(required)}): see the schema check")
    return ok(name, f"role {user!r} may {', '.join(db.PRIVILEGES)} on all {checked} tables")


def check_campaign(engine: Engine, resolved: Resolved) -> tuple[Check, str | None]:
    """The configuration agrees with the campaign's record (prefix, pool size), as `run`
    requires; a campaign not recorded yet is registered by its first live run. Also the
    topic the date was already planned on, if it was (every rerun of the date uses it),
    and, for the cost policy, whether any topic of the pool has rested (else a run now
    is refused)."""
    name = "campaign"
    spec = campaign_spec(resolved)
    day = resolved.day
    s = resolved.settings
    try:
        with db.read_only(engine) as conn:
            found = campaign.find(conn, spec)
            pool_size, warnings = campaign.pool_size_of(conn, spec, found)
            recorded = store.recorded_topic(conn, found.id, day) if found and day else None
            lasts: dict[str, dt.datetime | None] = {}
            if s.pool_policy == PoolPolicy.COST and recorded is None:
                with contextlib.suppress(BadInput):  # a bad pool: the pool check says so
                    lasts = store.last_publishes(conn, pool_topics(spec.prefix, pool_size))
            now = store.db_now(conn)
    except CampaignMismatch as error:
        fix = "see the message: update the configuration or record it"
        return fail(name, error.message, fix), None
    if found is None:
        detail = f"{spec.campaign_name!r}: not recorded yet; its first live run records it"
        return ok(name, detail), None
    detail = f"{found.name!r}: prefix {found.prefix}, pool of {pool_size}, as configured"
    if recorded is not None:
        detail += f"; {day} was planned on {recorded}: every rerun of it uses that topic"
    elif lasts:
        rest = dt.timedelta(seconds=s.rest_period)
        if not any(is_resting(Candidate(t, 0, True, at), now, rest) for t, at in lasts.items()):
            first = min(at for at in lasts.values() if at is not None) + rest
            problem = (
                f"{detail}; but every topic of the pool had a message within the rest period "
                f"({format_duration(s.rest_period)}): a run now is refused until "
                f"{first.isoformat(timespec='seconds')}"
            )
            fix = (
                "run the date after that; if runs come this often, give the pool more topics "
                f"(topic-sync campaign update {found.name} --pool-size N --live) or lower "
                "--rest-period"
            )
            return fail(name, problem, fix), None
    return (warn(name, f"{detail}; {warnings[0]}") if warnings else ok(name, detail)), recorded


def check_target(engine: Engine, target: FcmTarget) -> Check:
    """The FCM target the database's state is bound to is this invocation's."""
    name = "target"
    with db.read_only(engine) as conn:
        bound = bound_target(conn)
    if bound is None:
        return ok(name, f"not bound yet: the first live command binds it to {target}")
    if bound != (target.project_id, target.endpoint):
        return fail(
            name,
            f"the database's state belongs to {FcmTarget(*bound)}, but these options talk to "
            f"{target}",
            "use the database of that target (or these options' target); if the state really "
            "is this target's, 'topic-sync target bind --live'; to start over for it, "
            "'topic-sync target reset --live'",
        )
    return ok(name, f"bound to {target}, as these options are")


# --- FCM ----------------------------------------------------------------------------------------


def check_credentials(app: firebase_admin.App, target: FcmTarget) -> Check:
    """A token can be minted; the service account and the project it is for."""
    name = "credentials"
    if target.is_emulator:
        return ok(name, f"skipped: {target.endpoint} needs no credentials")
    try:
        email = mint_token(app)
    except google.auth.exceptions.GoogleAuthError as error:
        what, fix = auth_problem(error)
        return fail(name, f"cannot mint an access token: {what}", fix)
    who = f"service account {email}" if email else "application default credentials"
    return ok(name, f"{who}; project {target.project_id!r}; an access token was minted")


def _quoted(answer: ApiAnswer) -> str:
    status = f"HTTP {answer.status}" + (f" {answer.google_status}" if answer.google_status else "")
    return f"{status}: {answer.message!r}" if answer.message else status


def check_topic_api(app: firebase_admin.App, target: FcmTarget) -> Check:
    """FCM's topic API answers for this project: a list of a dummy registration's topics."""
    name = "fcm-api"
    answer = probe_topic_api(app, DOCTOR_TOKEN)
    project = target.project_id
    if answer.status is None:
        where = target.endpoint
        fix = (
            f"start the emulator ('topic-sync emulator') at {where.removeprefix('emulator ')}"
            if target.is_emulator
            else "check this host's route to fcm.googleapis.com:443 (proxy, firewall, DNS)"
        )
        return fail(name, f"no answer from {where}: {answer.message}", fix)
    if answer.status == 200 or answer.fcm_code:
        said = "no topics" if answer.status == 200 else f"unknown token ({answer.fcm_code})"
        return ok(
            name,
            f"topic API answered for project {project!r} about a dummy registration: {said}",
        )
    if answer.reason == "SERVICE_DISABLED" or (
        answer.status == 403 and "has not been used" in answer.message
    ):
        return fail(
            name,
            f"the Firebase Cloud Messaging API is not enabled for project {project!r}: "
            f"{_quoted(answer)}",
            "enable 'Firebase Cloud Messaging API' (fcm.googleapis.com) for the project in "
            "the Google Cloud console (APIs & Services), wait a few minutes, run doctor again",
        )
    if answer.status in (401, 403):
        return fail(
            name,
            f"FCM refused the credentials for project {project!r}: {_quoted(answer)}",
            "give the service account the Firebase Cloud Messaging Admin role in this project, "
            "and check that the project id is the one the key belongs to",
        )
    if answer.status == 429 or answer.status >= 500:
        return warn(
            name,
            f"FCM answered, but not well right now: {_quoted(answer)}",
            "a run retries these; if it persists, check FCM's status page",
        )
    return fail(
        name,
        f"an answer without FCM's error details: {_quoted(answer)}",
        "check the project id (--project, GOOGLE_CLOUD_PROJECT) and FCM_EMULATOR_HOST: "
        "this looks like a front end, not FCM",
    )


def check_message(
    settings: Settings,
    day: dt.date | None,
    topic: str | None,
    client: FcmClient | None,
    now: dt.datetime,
    *,
    chosen: bool = True,
) -> Check:
    """The message file is valid, and FCM accepts the day's message (validate_only), for
    the day's topic or, when that is not `chosen` yet, another of the pool: FCM checks
    only a topic name's form, the same for the whole pool."""
    name = "message"
    assert settings.message is not None  # else the run's needs fail the check
    if day is None:
        return skip(name, "no date")
    try:
        template = load_message(
            settings.message, day=day, collapse_key=settings.topic_prefix or "", now=now
        )
    except TopicSyncError as error:
        return fail(name, error.message, "correct the message file at the place named")
    valid = f"{settings.message}: valid, {template.payload_bytes()} bytes"
    if topic is None:
        return skip(name, f"{valid}; no topic to validate it for (see the pool check)")
    if client is None:
        return skip(name, f"{valid}; not sent to FCM (see the credentials and fcm-api checks)")
    try:
        client.publish(template.to_sdk(topic), validate_only=True)
    except CredentialsError as error:
        return fail(
            name,
            f"{valid}, but FCM refused the credentials for its validate_only send: {error.message}",
            "fix the credentials or the project's FCM API (see the checks above)",
        )
    except TopicSyncError as error:
        return fail(
            name,
            f"{valid}, but FCM refused it (validate_only, to {topic}): {error.message}",
            "correct the message file (FCM's reason above), or the credentials",
        )
    where = topic if chosen else f"{topic} (a topic of the pool; the date's is chosen later)"
    return ok(name, f"{valid}; FCM accepted it for {where} (validate_only: nothing delivered)")


def check_audience(resolved: Resolved, engine: Engine | None) -> Check:
    """What can be checked of the run's audience without consuming it, whatever its source
    (the rule of where it comes from is `run`'s own: config.needs.audience_source)."""
    name = "audience"
    try:
        source = audience_source(resolved)
    except TopicSyncError as error:
        return fail(
            name,
            error.message,
            "give --audience FILE (or -) or --audience-query, not both, or a --config "
            "campaign that sets the audience",
        )
    if source.kind is AudienceKind.STDIN:
        return ok(
            name,
            "standard input (--audience -): read and checked by the run itself; doctor "
            "leaves it whole for the run",
        )
    if source.kind is AudienceKind.QUERY:
        return _check_query(source, engine)
    return _check_file(source, resolved.settings.wait_for, resolved.day)


def _check_query(source: AudienceSource, engine: Engine | None) -> Check:
    """Describe the query in a read-only transaction: one statement, PostgreSQL accepts it,
    it has a token column. It is planned, not run (rows are the run's to read)."""
    name = "audience"
    url = source.database_url
    if url is None and engine is None:
        return skip(name, "no database for the query (see the database check)")
    assert source.query is not None
    try:
        with audience_connection(engine, url) as raw:
            column = audience_query_column(raw, source.query, source.token_column)
    except TopicSyncError as error:
        return fail(
            name,
            error.message,
            "correct --audience-query (one SELECT, WITH, VALUES or TABLE query, or a table "
            "name) or --audience-database-url",
        )
    where = mask_url(url) if url else "the job's database"
    return ok(
        name,
        f"query on {where}: one statement, tokens in its column {column!r} (described in a "
        "read-only transaction, not run: the run reads and checks every row)",
    )


def _check_file(source: AudienceSource, wait_for: Path | None, day: dt.date | None) -> Check:
    """The file exists, its first tokens are valid, its last line is whole, and what its
    producer's manifests say parses and is for the day; under --wait-for, a file or marker
    that is not there yet is what the run will wait for."""
    name = "audience"
    path = source.path
    assert path is not None
    fix = "have the producer write a correct file here, or point --audience at it"
    waits_for_it = wait_for is not None and arrival.is_same_path(wait_for, path)
    if wait_for is not None and not wait_for.exists():
        return ok(
            name,
            f"{path}: not read yet: the run waits for {wait_for} first (--wait-for, "
            "--wait-timeout)",
        )
    try:
        shape = audience_format(path, token_column=source.token_column)
        tokens = iter_audience(path, token_column=source.token_column)
        with contextlib.closing(tokens):
            seen = sum(1 for _ in itertools.islice(tokens, AUDIENCE_SAMPLE))
        manifests = manifest.manifests_for(path, wait_for, marker_is_audience=waits_for_it)
        manifest.check_names(manifests, path)
        if day is not None:
            manifest.check_day(manifests, day)
    except TopicSyncError as error:
        return fail(name, error.message, fix)
    size = path.stat().st_size
    if seen < AUDIENCE_SAMPLE:
        detail = f"{path}: {seen} tokens ({shape}, {size} bytes), all valid"
    else:
        detail = (
            f"{path}: the first {seen} tokens are valid ({shape}, {size} bytes; a run checks "
            "every line before changing anything)"
        )
    for m in manifests:
        detail += f"; manifest {m.source} ({m.describe()}) is checked by the run"
    if ends_with_newline(path) is False:
        if waits_for_it:
            return warn(
                name,
                f"{detail}; its last line does not end with a newline yet",
                "the run waits until it stops growing; if it still ends so, the run refuses "
                "it as cut short: have the producer end every line with a newline",
            )
        return fail(name, f"{path}: {UNTERMINATED}", fix)
    return ok(name, detail)


# --- all together -------------------------------------------------------------------------------


def check_publish_window(engine: Engine, resolved: Resolved, now: dt.datetime) -> Check:
    """With publish_at: the day's window, and whether a sync started now will likely be
    done by publish_at, estimated from the campaign's recent days (engine.estimate)."""
    name = "publish"
    s, day = resolved.settings, resolved.day or now.date()
    assert s.publish_at is not None
    with db.read_only(engine) as conn:
        found = campaign.find(conn, campaign_spec(resolved))
        zone = found.timezone if found else s.timezone
        window = Window.of(
            day,
            dt.time.fromisoformat(s.publish_at),
            dt.time.fromisoformat(s.publish_by) if s.publish_by else None,
            zone,
        )
        guess = (
            estimate(
                conn,
                found.id,
                day,
                rate_limit=s.rate_limit,
                api=FcmApi.of_transport(s.transport),
            )
            if found
            else None
        )
    detail = f"{day} publishes at {window.local()}, not after {window.local(window.publish_by)}"
    if guess is None:
        return ok(name, f"{detail}; no earlier day of the campaign to estimate its sync from")
    start = sync_start(window.publish_at, guess.seconds, s.sync_margin)
    detail += (
        f"; its sync takes {guess.describe()}: start it by {window.local(start)} "
        f"(sync_margin {format_duration(s.sync_margin)})"
    )
    problem = late_warning(guess, now, window.publish_at)
    if problem is not None:
        return warn(
            name,
            f"{detail}; {problem}",
            "start the sync earlier ('run --sync-only' ahead, or the scheduler's start), or "
            "move publish_at later",
        )
    return ok(name, detail)


def _after_settings(resolved: Resolved, io: Io) -> Iterator[Check]:
    """Every check but the first, over the settings it resolved."""
    s, day = resolved.settings, resolved.day
    needs = run_problems(resolved)  # what run would refuse, said by the check it concerns
    if "topic_prefix" in needs:
        pool, topic = _missing("pool", needs["topic_prefix"]), None
    else:
        pool, topic = check_pool(s, day)
    yield pool
    chosen = s.pool_policy == PoolPolicy.ORDINAL  # else only once the date planned
    engine = client = None
    try:
        try:
            url = database_url(s, io)
            engine = open_engine(s, io, check=False)
        except TopicSyncError as error:
            yield fail("database", error.message, "set a valid DATABASE_URL")
        if engine is not None:
            database = check_database(engine, url, s)
            yield database
            if database.status is CheckStatus.FAIL:
                engine.dispose()
                engine = None
        no_db = "no database (see the database check)"
        if engine is None:
            yield skip("schema", no_db)
            yield skip("grants", no_db)
        else:
            yield check_schema(engine)
            yield check_grants(engine)
        if engine is None:
            yield skip("campaign", no_db)
        elif not _has_table(engine, "campaigns"):
            yield skip("campaign", "no schema (see the schema check)")
        elif s.topic_prefix is None:
            yield skip("campaign", "no topic prefix (see the pool check)")
        else:
            campaign_check, recorded = check_campaign(engine, resolved)
            yield campaign_check
            if recorded is not None:
                topic, chosen = recorded, True

        credentials = None
        try:
            # The transport changes only how subscriptions travel, which doctor never sends.
            client = fcm_client(s.replace(transport=Transport.V1.value), io)
        except TopicSyncError as error:
            yield fail(
                "credentials",
                error.message,
                "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key of the project",
            )
        if client is not None:
            credentials = check_credentials(client.app, client.target)
            yield credentials
        if engine is None:
            yield skip("target", no_db)
        elif client is None:
            yield skip("target", "no FCM target without credentials")
        elif not _has_target_table(engine):
            yield skip("target", "no schema (see the schema check)")
        else:
            yield check_target(engine, client.target)
        api = None
        if client is None or credentials is None or credentials.status is CheckStatus.FAIL:
            yield skip("fcm-api", "no credentials (see the credentials check)")
        else:
            api = check_topic_api(client.app, client.target)
            yield api
        usable = client if api is not None and api.status is not CheckStatus.FAIL else None
        if "message" in needs:
            yield _missing("message", needs["message"])
        else:
            yield check_message(s, day, topic, usable, io.now(), chosen=chosen)
        yield check_audience(resolved, engine)
        if s.publish_at is not None:
            if engine is None or not _has_table(engine, "campaigns"):
                yield skip("publish", no_db)
            else:
                yield check_publish_window(engine, resolved, io.now())
    finally:
        if engine is not None:
            engine.dispose()
        if client is not None:
            close_fcm_client(client)


def _missing(name: str, problem: str) -> Check:
    """A check failed because the run would lack a setting it cannot do without."""
    return fail(name, problem, "give it on the command line or in a --config campaign")


def _has_target_table(engine: Engine) -> bool:
    return _has_table(engine, "fcm_target")


def _has_table(engine: Engine, table: str) -> bool:
    with db.read_only(engine) as conn:
        return not db.missing_tables(conn, (table,))


def doctor(resolve: Callable[[], Resolved], io: Io, *, backfill: bool = False) -> DoctorResult:
    """Run every check against what `run` with the same options would use; change nothing.

    `resolve` gives the settings (the first check: the configuration file and the options
    must resolve). The result is ready (exit 0) unless a check failed.
    """
    config, resolved = check_config(resolve, backfill=backfill)
    if resolved is None:
        why = "the settings do not resolve (see the config check)"
        return DoctorResult([config, *(skip(name, why) for name in NAMES[1:])])
    return DoctorResult([config, *_after_settings(resolved, io)], resolved.day)
