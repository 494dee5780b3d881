"""Shared fixtures: a real PostgreSQL server and the local FCM emulator.

PostgreSQL: TEST_DATABASE_URL (a server where we may create databases), else an
embedded server in a temporary directory. Each test gets a fresh database
cloned from a migrated template, which takes milliseconds.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import firebase_admin
import pytest
from sqlalchemy import create_engine, make_url, text

from topic_sync.emulator import FcmEmulator
from topic_sync.engine.drain import Deps
from topic_sync.fcm.client import SdkClient, make_client
from topic_sync.fcm.sdk_bridge import initialize_app
from topic_sync.store import db

TEMPLATE = f"topic_sync_template_{os.getpid()}"


def _with_database(url: str, name: str) -> str:
    return make_url(db.sqlalchemy_url(url)).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    import pgserver

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = Path(tempfile.mkdtemp(prefix="topic-sync-test-pg-"))
        server = pgserver.get_server(data, cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


def _admin(url: str):
    return create_engine(_with_database(url, "postgres"), isolation_level="AUTOCOMMIT", pool_size=1)


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> Iterator[str]:
    admin = _admin(pg_server_url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEMPLATE}"'))
        conn.execute(text(f'CREATE DATABASE "{TEMPLATE}"'))
    url = _with_database(pg_server_url, TEMPLATE)
    db.upgrade(url)
    yield TEMPLATE
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def database_url(pg_server_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"ts_{uuid.uuid4().hex[:12]}"
    admin = _admin(pg_server_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    yield _with_database(pg_server_url, name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def engine(database_url: str):
    eng = db.make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def emulator() -> Iterator[FcmEmulator]:
    with FcmEmulator() as emu:
        yield emu


@pytest.fixture(params=["v1", "v1-direct", "legacy-iid"])
def transport(request) -> str:
    return request.param


@pytest.fixture
def fcm_app(emulator: FcmEmulator) -> Iterator[firebase_admin.App]:
    app = initialize_app(
        name=f"test-{uuid.uuid4().hex}", project_id="demo-test", emulator_host=emulator.host_port
    )
    yield app
    firebase_admin.delete_app(app)


@pytest.fixture
def client(fcm_app: firebase_admin.App, transport: str) -> SdkClient:
    return make_client(fcm_app, transport)


class Recorder:
    """Collects what the engine logs and how long it asked to sleep."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sleeps: list[float] = []

    def log(self, line: str) -> None:
        self.lines.append(line)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def deps(engine, client: SdkClient, recorder: Recorder) -> Deps:
    return Deps(
        engine=engine,
        client=client,
        sleep=recorder.sleep,
        now=lambda: dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC),
        log=recorder.log,
    )


@pytest.fixture
def message_file(tmp_path: Path) -> Path:
    path = tmp_path / "message.json"
    path.write_text(
        '{"notification": {"title": "Jobs for {date}", "body": "Your picks are ready"},'
        ' "data": {"kind": "jobreco", "date": "{date}"}}'
    )
    return path


def write_audience(path: Path, tokens) -> Path:
    path.write_text("".join(f"{t}\n" for t in tokens))
    return path
