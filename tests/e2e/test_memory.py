"""Every command's memory stays flat as the state grows: peak RSS at 1,000,000 subscriptions
within 1.25x of the figure at 100,000.

The state is written straight into the database (set-based SQL, seconds for a million rows),
then each command runs as a subprocess whose peak RSS is read back from the kernel.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from tests.support import (
    REPO_ROOT,
    cli_command,
    cli_env,
    create_database,
    drop_database,
    ensure_campaign,
)
from topic_sync.emulator import FcmEmulator

SMALL, LARGE = 100_000, 1_000_000
RATIO = 1.25
PREFIX = "mem"
COMMANDS = {
    "reconcile": ("reconcile", "--topic-prefix", PREFIX, "--pool-size", "2", "--json"),
    "reconcile --full": (
        "reconcile",
        "--topic-prefix",
        PREFIX,
        "--pool-size",
        "2",
        "--full",
        "--json",
    ),
    "reconcile --audit --sample": (
        "reconcile",
        "--topic-prefix",
        PREFIX,
        "--pool-size",
        "2",
        "--audit",
        "--sample",
        "500",
        "--json",
    ),
    "report": ("report", "--format", "json"),
    "report --failed": ("report", "--failed", "--format", "json"),
    "status": ("status", "--json"),
}
# Runs the command as its only child and prints the child's peak RSS in KiB.
MEASURE = (
    "import resource, subprocess, sys; "
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); "
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def seed(url: str, size: int) -> None:
    """`size` tokens subscribed to one topic of the pool, a tenth owed to the other, a run
    and a failure row per hundred tokens: what months of running leave behind."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(
            text("INSERT INTO tokens (token) SELECT 'mem:' || g FROM generate_series(1, :n) g"),
            {"n": size},
        )
        conn.execute(
            text(
                "INSERT INTO subscriptions (topic, token_id, status) "
                "SELECT 'mem-0', id, 'subscribed' FROM tokens"
            )
        )
        conn.execute(
            text(
                "INSERT INTO subscriptions (topic, token_id, status) "
                "SELECT 'mem-1', id, 'unsubscribed' FROM tokens WHERE id % 10 = 0"
            )
        )
        conn.execute(
            text(
                "INSERT INTO runs (campaign_id, prefix, run_date, topic, transport, status, "
                "publish_state) VALUES (:c, 'mem', '2026-11-01', 'mem-0', 'v1', 'published', "
                "'sent')"
            ),
            {"c": ensure_campaign(conn, "mem", 2)},
        )
        conn.execute(
            text(
                "INSERT INTO token_failures (run_id, token_id, topic, op, code, reason) "
                "SELECT r.id, t.id, 'mem-0', 'subscribe', 'internal-error', 'INTERNAL' "
                "FROM tokens t, runs r WHERE t.id % 100 = 0"
            )
        )
        conn.execute(text("ANALYZE"))
    engine.dispose()


def peaks(url: str, emulator: FcmEmulator) -> dict[str, int]:
    env = cli_env(url, emulator)
    out = {}
    for name, args in COMMANDS.items():
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, *cli_command(*args)],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        code, kib = done.stdout.split()
        assert code == "0", f"{name} exited {code}"
        out[name] = int(kib)
    return out


@pytest.fixture(scope="module")
def measured(pg_server_url, template_db) -> dict[int, dict[str, int]]:
    figures = {}
    with FcmEmulator() as emulator:
        for size in (SMALL, LARGE):
            name, url = create_database(pg_server_url, template_db, prefix="memory")
            try:
                seed(url, size)
                figures[size] = peaks(url, emulator)
            finally:
                drop_database(pg_server_url, name)
    return figures


@pytest.mark.heavy  # a million rows, every command in a subprocess
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_peak_memory_is_flat_from_100k_to_1m_subscriptions(measured, command):
    small, large = measured[SMALL][command], measured[LARGE][command]
    print(json.dumps({"command": command, "kib_100k": small, "kib_1m": large}))
    assert large <= RATIO * small, f"{command}: {small} KiB at 100k, {large} KiB at 1M"
