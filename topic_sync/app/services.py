"""Turning resolved settings into the things the engine works with: a database engine, an
FCM client and the pacer they share. Every command builds them here, the same way.

The caller (the CLI, the scheduler, the demo) supplies an `Io`: where log lines and
progress go, how to sleep and when to stop, and the process environment (read once, by
the caller: nothing below the CLI reads os.environ).
"""

from __future__ import annotations

import contextlib
import datetime as dt
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
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, ProgrammingError

from topic_sync.engine.drain import Deps, Progress
from topic_sync.errors import BadInput, CredentialsError, TopicSyncError
from topic_sync.fcm.client import SdkClient
from topic_sync.fcm.pacer import Pacer
from topic_sync.fcm.transports import make_client
from topic_sync.inputs.config import mask_url, scrub
from topic_sync.settings import Settings
from topic_sync.store.db import check_schema, embedded_url, make_engine
from topic_sync.store.embedded import default_base

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
        return settings.database_url
    base = default_base(io.environ, os.geteuid())
    io.log(f"DATABASE_URL is not set: using the embedded PostgreSQL in {base}")
    return embedded_url(base)


def state_dir(settings: Settings, io: Io) -> Path:
    """This host's folder for last-resort evidence (--state-dir), by default the folder the
    embedded PostgreSQL's data sits in (topic-sync's per-user data folder; as root,
    /var/lib/topic-sync)."""
    if settings.state_dir is not None:
        return settings.state_dir
    return default_base(io.environ, os.geteuid()).parent


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
            check_schema(engine)
        except (OperationalError, InterfaceError, ProgrammingError) as error:
            engine.dispose()
            reason = scrub(str(error.orig), url)
            raise TopicSyncError(f"cannot reach the database {mask_url(url)}: {reason}") from None
    return engine


def fcm_client(settings: Settings, io: Io, pacer: Pacer | None = None) -> SdkClient:
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
    except (ValueError, OSError, google.auth.exceptions.GoogleAuthError) as error:
        raise CredentialsError(
            f"cannot load the Firebase credentials: {str(error).rstrip('.')}. Point "
            "GOOGLE_APPLICATION_CREDENTIALS at a readable service-account key file (JSON, "
            "as downloaded from the Firebase console: Project settings > Service accounts), "
            "or set up application default credentials; to rehearse without credentials, "
            "use the emulator (FCM_EMULATOR_HOST)"
        ) from None
    return make_client(app, settings.transport)


@contextlib.contextmanager
def services(settings: Settings, io: Io) -> Iterator[Deps]:
    """The engine's dependencies for one command; the database engine is disposed after."""
    engine = open_engine(settings, io)
    try:
        pacer = Pacer(settings.rate_limit)
        yield Deps(
            engine=engine,
            client=fcm_client(settings, io, pacer),
            sleep=io.sleep,
            now=io.now,
            log=io.log,
            pacer=pacer,
            progress=io.progress,
            should_stop=io.should_stop,
            topic_chosen=io.topic_chosen,
        )
    finally:
        engine.dispose()


@contextlib.contextmanager
def database(settings: Settings, io: Io) -> Iterator[Engine]:
    """Only the database, for commands that do not talk to FCM."""
    engine = open_engine(settings, io)
    try:
        yield engine
    finally:
        engine.dispose()
