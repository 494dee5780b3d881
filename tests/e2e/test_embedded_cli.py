"""The embedded PostgreSQL from the command line: --embedded-dir (TOPIC_SYNC_EMBEDDED_DIR)
chooses its folder, root is told what that means (a system user, a copy of PostgreSQL), and
`db stop-embedded` stops it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tests.support import cli_env, describe, run_cli_process
from topic_sync.store.embedded import SYSTEM_USER, EmbeddedServer


def test_the_embedded_server_lives_where_told_and_stops_on_command(database_url, emulator):
    parent = Path(tempfile.mkdtemp(prefix="topic-sync-e2e-pg-"))
    parent.chmod(0o755)  # as root, the server's user must be able to enter it
    folder = parent / "embedded"
    env = cli_env(database_url, emulator, TOPIC_SYNC_EMBEDDED_DIR=str(folder))
    del env["DATABASE_URL"]
    try:
        started = run_cli_process("db", "upgrade", env=env)
        assert started.returncode == 0, describe(started)
        assert f"using the embedded PostgreSQL in {folder}" in started.stderr
        said_root = f"runs as the system user {SYSTEM_USER}" in started.stderr
        assert said_root is (os.geteuid() == 0), describe(started)
        assert "stop-embedded" in started.stderr or os.geteuid() != 0
        pid = EmbeddedServer(folder).pid()
        assert pid is not None

        stopped = run_cli_process("db", "stop-embedded", "--json", env=env)

        assert stopped.returncode == 0, describe(stopped)
        assert f"stopped the embedded PostgreSQL in {folder}" in stopped.stderr
        assert EmbeddedServer(folder).pid() is None
        again = run_cli_process("db", "stop-embedded", env=env)
        assert again.returncode == 0 and f"no embedded PostgreSQL runs in {folder}" in again.stderr
    finally:
        EmbeddedServer(folder).stop()
        shutil.rmtree(parent, ignore_errors=True)
