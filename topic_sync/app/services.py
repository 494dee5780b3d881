"""Turning resolved settings into the things the engine works with: a database engine, an
FCM client and the pacer they share. Every command builds them here, the same way.

The caller (the CLI, the scheduler, the demo) supplies an `Io`: where log lines and
progress go, how to sleep and when to stop, and the process environment (read once, by
the caller: nothing below the CLI reads os.environ).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import google.auth.exceptions
from sqlalchemy import Engine
from sqlalchemy.exc import (
    ArgumentError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from topic_sync import store
from topic_sync.config.table import Settings
from topic_sync.engine.types import Deps, Progress
from topic_sync.errors import BadInput, CredentialsError, DatabaseUnavailable, TopicSyncError
from topic_sync.fcm.pacer import Pacer, Quota
from topic_sync.fcm.transports import SdkTransport, make_client
from topic_sync.redact import mask_url, scrub
from topic_sync.store.db import (
    check_postgres_url,
    check_schema,
    embedded_url,
    is_unreachable,
    make_engine,
)
from topic_sync.store.embedded import SYSTEM_USER, default_base

_app_names = itertools.count()
POOL_HEADROOM = 2  # connections beyond one per worker: the run's lock, plan and bookkeeping


def _no_progress(_progress: Progress) -> None:
    return None


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Io:
    """What the caller gives every command besides its settings."""

    log: Callable[[str], None]
    environ: Mapping[str, str]
    progress: Callable[[Progress], None] = _no_progress
    sleep: Callable[[float], None] = time.sleep
    should_stop: Callable[[], bool] = _never
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    stdin: BinaryIO | None = None  # what `--audience -` reads (the CLI's standard input)
    topic_chosen: Callable[[str], None] = lambda _topic: None  # a run chose its topic


def database_url(settings: Settings, io: Io) -> str:
    """The URL to use; without one, start the embedded PostgreSQL and say so."""
    if settings.database_url:
        check_postgres_url(
            settings.database_url, f"the database URL {mask_url(settings.database_url)!r}"
        )
        return settings.database_url
    base = embedded_base(settings, io)
    io.log(f"DATABASE_URL is not set: using the embedded PostgreSQL in {base}")
    if os.geteuid() == 0:
        shared = "" if settings.embedded_dir else ", shared by every root session"
        io.log(
            f"  as root, that server runs as the system user {SYSTEM_USER} (created if missing) "
            f"and {base} holds its data and a copy of PostgreSQL (about 300 MB){shared}; "
            "--embedded-dir (TOPIC_SYNC_EMBEDDED_DIR) picks another folder, 'topic-sync db "
            "stop-embedded' stops the server"
        )
    return embedded_url(base)


def state_dir(settings: Settings, io: Io) -> Path:
    """This host's folder for last-resort evidence (--state-dir), by default the folder the
    embedded PostgreSQL's data sits in (topic-sync's per-user data folder; as root,
    /var/lib/topic-sync)."""
    if settings.state_dir is not None:
        return settings.state_dir
    return default_base(io.environ, os.geteuid()).parent


def embedded_base(settings: Settings, io: Io) -> Path:
    """The embedded PostgreSQL's folder: --embedded-dir, else the per-user default."""
    return settings.embedded_dir or default_base(io.environ, os.geteuid())


def open_engine(settings: Settings, io: Io, *, check: bool = True) -> Engine:
    """An engine whose pool fits the workers (one connection each, plus headroom).

    Errors never show a secret of the URL (a driver's message may quote it).
    """
    url = database_url(settings, io)
    try:
        engine = make_engine(url, pool_size=settings.concurrency + POOL_HEADROOM)
    except ArgumentError:
        raise BadInput(f"database URL {mask_url(url)!r} is not a valid URL") from None
    if check:
        try:
            with reaching(url):
                check_schema(engine)
        except ProgrammingError as error:
            engine.dispose()
            reason = scrub(str(error.orig), url)
            raise TopicSyncError(f"cannot use the database {mask_url(url)}: {reason}") from None
        except BaseException:
            engine.dispose()
            raise
    return engine


@contextlib.contextmanager
def reaching(url: str) -> Iterator[None]:
    """A database that cannot be reached, or is lost midway, is DatabaseUnavailable (its own
    exit code), with a message that says what to check and never a secret of the URL."""
    try:
        yield
    except (OperationalError, InterfaceError) as error:
        if not is_unreachable(error):
            raise
        lines = scrub(str(error.orig), url).strip().splitlines()
        reason = lines[0] if lines else type(error.orig).__name__
        raise DatabaseUnavailable(
            f"the database {mask_url(url)} is unavailable: {reason}. Check that it runs and "
            "accepts this host's connections (DATABASE_URL: host, port, database, user, "
            "password); what was committed stands, and a rerun once it is back continues"
        ) from None


NEW_KEY = (
    "create a new key for the service account (Firebase console: Project settings > Service "
    "accounts > Generate new private key), point GOOGLE_APPLICATION_CREDENTIALS at it"
)


def auth_problem(error: google.auth.exceptions.GoogleAuthError) -> tuple[str, str]:
    """What went wrong getting an access token, and how to fix it, in words (google-auth's
    own message is often a tuple's repr: the reason and the token endpoint's answer)."""
    if isinstance(error, google.auth.exceptions.RefreshError):
        answer = next((a for a in error.args[1:] if isinstance(a, dict)), {})
        code = str(answer.get("error") or "").strip()
        said = str(answer.get("error_description") or "").strip()
        if not code:
            first = str(error.args[0]) if error.args else ""
            code, _, said = first.partition(": ")
        reason = f"{code}: {said}" if said else code or "no reason given"
        if code == "invalid_grant":
            return (
                f"Google refused the service-account key ({reason}): the key was deleted or "
                "disabled, or this host's clock is off",
                f"{NEW_KEY}; check the clock (timedatectl)",
            )
        if code in ("invalid_client", "unauthorized_client"):
            return (
                f"Google does not accept this service account ({reason}): it was deleted or "
                "disabled",
                f"use an enabled service account of the project: {NEW_KEY}",
            )
        return (f"Google refused to issue an access token ({reason})", NEW_KEY)
    if isinstance(error, google.auth.exceptions.TransportError):
        cause = error.args[0] if error.args else error
        return (
            f"cannot reach Google's token endpoint to get an access token: {cause}",
            "check this host's route to oauth2.googleapis.com:443 (proxy, firewall, DNS)",
        )
    if isinstance(error, google.auth.exceptions.DefaultCredentialsError):
        return (
            f"no credentials: {str(error).rstrip('.')}",
            "point GOOGLE_APPLICATION_CREDENTIALS at the service-account key file (JSON); to "
            "rehearse without credentials, use the emulator (FCM_EMULATOR_HOST)",
        )
    return (f"the credentials do not work: {error}", NEW_KEY)


@contextlib.contextmanager
def credentials_in_words() -> Iterator[None]:
    """google-auth's errors while a command talks to FCM, as a CredentialsError (a key Google
    refuses) or a plain error (its token endpoint unreachable) saying how to fix them."""
    try:
        yield
    except google.auth.exceptions.TransportError as error:
        what, fix = auth_problem(error)
        raise TopicSyncError(f"{what}. To fix: {fix}") from None
    except google.auth.exceptions.GoogleAuthError as error:
        what, fix = auth_problem(error)
        raise CredentialsError(f"{what}. To fix: {fix}") from None


def fcm_client(settings: Settings, io: Io, pacer: Pacer | None = None) -> SdkTransport:
    """The FCM client of the settings' transport, on a firebase-admin app of its own."""
    from topic_sync.fcm.sdk_bridge import initialize_app

    if settings.emulator_host:
        io.log(f"FCM emulator at {settings.emulator_host}: nothing goes to production FCM")
    try:
        app = initialize_app(
            name=f"topic-sync-{next(_app_names)}-{uuid.uuid4().hex[:6]}",
            project_id=settings.project,
            emulator_host=settings.emulator_host,
            pacer=pacer,
        )
    except google.auth.exceptions.GoogleAuthError as error:
        what, fix = auth_problem(error)
        raise CredentialsError(
            f"cannot load the Firebase credentials: {what}. To fix: {fix}"
        ) from None
    except (ValueError, OSError) as error:
        raise CredentialsError(
            f"cannot load the Firebase credentials: {str(error).rstrip('.')}. Point "
            "GOOGLE_APPLICATION_CREDENTIALS at a readable service-account key file (JSON, "
            "as downloaded from the Firebase console: Project settings > Service accounts), "
            "or set up application default credentials; to rehearse without credentials, "
            "use the emulator (FCM_EMULATOR_HOST)"
        ) from None
    return make_client(app, settings.transport)


def close_fcm_client(client: SdkTransport) -> None:
    """Delete the firebase-admin app fcm_client made for this client: a process that runs
    one command after another (the scheduler) would otherwise keep an app per command."""
    import firebase_admin

    firebase_admin.delete_app(client.app)


@contextlib.contextmanager
def services(settings: Settings, io: Io) -> Iterator[Deps]:
    """The engine's dependencies for one command; the database engine and the FCM client's
    app are let go after.

    The pacer starts from the quota an earlier command learned against the same FCM target
    and API, and what this command learned is kept for the next one."""
    with database(settings, io) as engine, credentials_in_words():
        pacer = Pacer(settings.rate_limit)
        client = fcm_client(settings, io, pacer)
        try:
            _start_from_learned(engine, client, pacer, io)
            try:
                with spared_by_the_collector():
                    yield Deps(
                        engine=engine,
                        client=client,
                        sleep=io.sleep,
                        now=io.now,
                        log=io.log,
                        pacer=pacer,
                        progress=io.progress,
                        should_stop=io.should_stop,
                        topic_chosen=io.topic_chosen,
                        warm_up=client.warm_up,
                    )
            finally:
                _remember_learned(engine, client, pacer, io)
        finally:
            close_fcm_client(client)


@contextlib.contextmanager
def spared_by_the_collector() -> Iterator[None]:
    """What a command built before its work (the modules it imported, its database engine,
    its FCM client: some 100,000 objects) lives through the work. Each full collection
    walked all of it, a 35-45 ms stall of every request, at the start of a day's sync and
    again seconds later: so it is frozen out of the collector for the work, and handed back
    after (what the work itself makes is collected as usual)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _start_from_learned(engine: Engine, client: SdkTransport, pacer: Pacer, io: Io) -> None:
    target = client.target
    with engine.connect() as conn:
        learned = store.learned_quota(conn, target.project_id, target.endpoint, client.api)
    if learned is None:
        return
    pacer.start_from(Quota(learned.rate, learned.measured, learned.waits))
    how = "measured" if learned.measured else "got through, no lower quota met"
    when = learned.learned_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    waits = "; its 429s say how long to wait" if learned.waits else ""
    io.log(f"FCM quota: starting from {learned.rate:,.0f} requests/s ({how} {when}{waits})")


def _remember_learned(engine: Engine, client: SdkTransport, pacer: Pacer, io: Io) -> None:
    """Keep what the pacer learned; a failure (the database gone) only costs the next
    command a slower start, so it is logged, never raised over the command's outcome."""
    learned = pacer.learned()
    if learned is None:
        return
    target = client.target
    try:
        with engine.begin() as conn:
            store.remember_quota(
                conn,
                target.project_id,
                target.endpoint,
                client.api,
                learned.rate,
                learned.measured,
                waits=learned.waits,
            )
    except SQLAlchemyError as error:
        io.log(f"WARNING: the FCM quota learned ({learned.rate:,.0f}/s) was not kept: {error}")


@contextlib.contextmanager
def database(settings: Settings, io: Io) -> Iterator[Engine]:
    """Only the database, for commands that do not talk to FCM."""
    engine = open_engine(settings, io)
    try:
        with reaching(engine.url.render_as_string(hide_password=False)):
            yield engine
    finally:
        engine.dispose()
