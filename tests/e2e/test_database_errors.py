"""A database that cannot be reached has its own exit code (11) and a message saying what to
check; a URL that is not PostgreSQL's is bad input (2). Neither prints a traceback, a driver's
module name or a password."""

from __future__ import annotations

import pytest

from tests.support import (
    DAY1,
    cli_env,
    describe,
    make_tokens,
    refusing_port,
    run_args,
    run_cli,
    summary,
    write_lines,
)


@pytest.mark.parametrize(
    "command",
    [
        ["db", "upgrade"],
        ["report", "--runs"],
        ["status", "--json"],
        ["reconcile", "--topic-prefix", "jobreco"],
    ],
)
def test_an_unreachable_database_exits_11_with_what_to_check(emulator, command) -> None:
    with refusing_port() as port:
        url = f"postgresql://topic_sync:s3cret@127.0.0.1:{port}/topic_sync"
        proc = run_cli(*command, env=cli_env(url, emulator))

    assert proc.returncode == 11, describe(proc)
    assert "is unavailable" in proc.stderr and "127.0.0.1" in proc.stderr
    assert "DATABASE_URL" in proc.stderr
    assert "s3cret" not in proc.stderr + proc.stdout
    assert "unexpected error" not in proc.stderr and "Traceback" not in proc.stderr
    if "--json" in command:
        assert summary(proc)["kind"] == "database_unavailable"


def test_a_run_against_an_unreachable_database_exits_11(emulator, tmp_path, message_file) -> None:
    audience = write_lines(tmp_path / "audience.txt", make_tokens("d", range(3)))
    args = run_args(DAY1, audience, message_file, prefix="dbdown", pool_size=1)

    with refusing_port() as port:
        proc = run_cli(*args, env=cli_env(f"postgresql://u@127.0.0.1:{port}/x", emulator))

    assert proc.returncode == 11, describe(proc)
    assert summary(proc)["kind"] == "database_unavailable"
    assert emulator.publishes == []


@pytest.mark.parametrize(
    "url",
    ["mysql://u:pw@db/topic_sync", "sqlite:///topic-sync.db", "db.internal/topic_sync"],
)
def test_a_url_that_is_not_postgresql_is_bad_input(emulator, url) -> None:
    proc = run_cli("report", "--runs", env=cli_env(url, emulator))

    assert proc.returncode == 2, describe(proc)
    assert "is not a PostgreSQL URL" in proc.stderr
    assert "ModuleNotFoundError" not in proc.stderr and "unexpected" not in proc.stderr
    assert "pw" not in proc.stderr.replace("topic-sync", "")
