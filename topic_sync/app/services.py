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
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from topic_sync.engine.drain import Deps, Progress
from topic_sync.errors import CredentialsError, TopicSyncError
from topic_sync.fcm.client import FcmClient
from topic_sync.fcm.pacer import Pacer
from topic_sync.fcm.transports import make_client
from topic_sync.settings import Settings
from topic_sync.store.db import check_schema, default_data_dir, embedded_url, make_engine

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


def database_url(settings: Settings, io: Io) -> str:
    """The URL to use; without one, start the embedded PostgreSQL and say so."""
    if settings.database_url:
        return settings.database_url
    data_dir = default_data_dir(io.environ) / "pgdata"
    io.log(f"DATABASE_URL is not set: using the embedded PostgreSQL in {data_dir}")
    return embedded_url(data_dir)


def open_engine(settings: Settings, io: Io, *, check: bool = True) -> Engine:
    """An engine whose pool fits the workers (one connection each, plus headroom)."""
    engine = make_engine(database_url(settings, io), pool_size=settings.concurrency + POOL_HEADROOM)
    if check:
        try:
            check_schema(engine)
        except OperationalError as error:
            engine.dispose()
            raise TopicSyncError(f"cannot reach the database: {error.orig}") from None
    return engine


def fcm_client(settings: Settings, io: Io, pacer: Pacer | None = None) -> FcmClient:
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
    except (ValueError, OSError) as error:
        raise CredentialsError(f"cannot set up Firebase credentials: {error}") from error
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
