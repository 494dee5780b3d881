"""Shared fixtures: a real PostgreSQL server and the local FCM emulator.

PostgreSQL: TEST_DATABASE_URL (a server where we may create databases), else an
embedded server in a temporary directory. Each test gets a fresh database: a clone of a
migrated template, or one a finished test used, emptied (tests.support.DatabasePool). The
helpers behind these fixtures live in tests/support.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import ssl
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path

import firebase_admin
import httpx._transports.default as httpx_transports
import pytest
from sqlalchemy import Engine, text

from tests.fakes import ModelFcm
from tests.support import (
    DatabasePool,
    Recorder,
    TokenEndpoint,
    admin_engine,
    drop_database,
    with_database,
)
from topic_sync.config.table import DEFAULTS, TRANSPORTS
from topic_sync.emulator import FcmEmulator
from topic_sync.engine.types import Deps
from topic_sync.fcm.sdk_bridge import initialize_app
from topic_sync.fcm.target import FcmTarget
from topic_sync.fcm.transports import SdkTransport, make_client
from topic_sync.store import db
from topic_sync.store.embedded import EmbeddedServer

TEMPLATE = f"topic_sync_template_{os.getpid()}"


@pytest.fixture(scope="session", autouse=True)
def one_default_tls_context_per_process() -> Iterator[None]:
    """Every firebase-admin app builds an httpx client for async sends, which topic-sync
    never makes, and each loads the CA bundle three times (tens of milliseconds). A test
    process builds an app per run, thousands of them, against a plain-HTTP emulator: it
    reuses one default context. Other settings (a CA file, a client certificate) still
    get their own, and production processes build one app per run anyway."""
    build = httpx_transports.create_ssl_context
    default = functools.cache(lambda: build())

    def create_ssl_context(
        verify: object = True, cert: object = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        if verify is True and cert is None and trust_env:
            return default()
        return build(verify=verify, cert=cert, trust_env=trust_env)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx_transports, "create_ssl_context", create_ssl_context)
        yield


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    # The project's own embedded server, in a folder of this session's. Its parent must be
    # reachable by the server's user when the tests run as root (see store.embedded).
    parent = Path(tempfile.mkdtemp(prefix="topic-sync-test-pg-"))
    parent.chmod(0o755)
    server = EmbeddedServer(parent / "pg")
    try:
        yield server.url()
    finally:
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> Iterator[str]:
    admin = admin_engine(pg_server_url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEMPLATE}"'))
        conn.execute(text(f'CREATE DATABASE "{TEMPLATE}"'))
    admin.dispose()
    db.upgrade(with_database(pg_server_url, TEMPLATE))
    yield TEMPLATE
    drop_database(pg_server_url, TEMPLATE)


@pytest.fixture(scope="session")
def database_pool(pg_server_url: str, template_db: str) -> Iterator[DatabasePool]:
    pool = DatabasePool(pg_server_url, template_db)
    yield pool
    pool.close()


@pytest.fixture
def database_url(database_pool: DatabasePool) -> Iterator[str]:
    """A fresh, migrated database for one test (see DatabasePool)."""
    name, url = database_pool.take()
    yield url
    database_pool.give_back(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = db.make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def emulator() -> Iterator[FcmEmulator]:
    with FcmEmulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def module_emulator() -> Iterator[FcmEmulator]:
    """One emulator for a whole module (faster than one per test); reset it before each use."""
    with FcmEmulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def module_app(module_emulator: FcmEmulator) -> Iterator[firebase_admin.App]:
    """A firebase-admin app pointed at the module's emulator."""
    app = initialize_app(
        name=f"module-{uuid.uuid4().hex}",
        project_id="demo-test",
        emulator_host=module_emulator.host_port,
    )
    yield app
    firebase_admin.delete_app(app)


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> str:
    """The transport of the test's `client` (and `deps`): the default one. Where the transport
    matters (what a transport sends and reads: the contract tests), a test or module is marked
    `every_transport` and runs once per transport; a test may also ask for some by
    `@pytest.mark.parametrize("transport", [...])`."""
    return str(getattr(request, "param", DEFAULTS.transport))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`@pytest.mark.every_transport`: the test runs once per transport, unless it names its
    transports itself (a parametrize of `transport`) or uses no client."""
    if metafunc.definition.get_closest_marker("every_transport") is None:
        return
    if "transport" not in metafunc.fixturenames:
        return
    named = (
        mark
        for mark in metafunc.definition.iter_markers("parametrize")
        if "transport" in _argnames(mark.args[0])
    )
    if next(named, None) is None:
        metafunc.parametrize("transport", TRANSPORTS, indirect=True)


def _argnames(argnames: str | Sequence[str]) -> list[str]:
    if isinstance(argnames, str):
        return [name.strip() for name in argnames.split(",")]
    return list(argnames)


@pytest.fixture
def fcm_app(emulator: FcmEmulator) -> Iterator[firebase_admin.App]:
    app = initialize_app(
        name=f"test-{uuid.uuid4().hex}", project_id="demo-test", emulator_host=emulator.host_port
    )
    yield app
    firebase_admin.delete_app(app)


@pytest.fixture
def client(fcm_app: firebase_admin.App, transport: str) -> SdkTransport:
    return make_client(fcm_app, transport)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def deps(engine: Engine, client: SdkTransport, recorder: Recorder) -> Deps:
    return Deps(
        engine=engine,
        client=client,
        sleep=recorder.sleep,
        now=lambda: dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC),
        log=recorder.log,
    )


@pytest.fixture
def model_fcm() -> ModelFcm:
    """An in-memory FCM (tests/fakes.py) for engine tests that do not need HTTP."""
    return ModelFcm(target=FcmTarget("demo-test", "emulator model"))


@pytest.fixture
def model_deps(engine: Engine, model_fcm: ModelFcm, recorder: Recorder) -> Deps:
    """As `deps`, with the in-memory FCM in place of a transport and the emulator."""
    return Deps(
        engine=engine,
        client=model_fcm,
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


@pytest.fixture
def token_endpoint() -> Iterator[tuple[str, type[TokenEndpoint]]]:
    """A local OAuth token endpoint (its URL, and its handler class whose `answer` to set)."""
    handler = type("Handler", (TokenEndpoint,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token", handler
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
