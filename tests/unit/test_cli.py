"""The CLI layer: option parsing, error output, progress display."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from topic_sync.cli.main import cli
from topic_sync.cli.output import ProgressLine
from topic_sync.engine.drain import Progress
from topic_sync.fcm.error_table import Op
from topic_sync.settings import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3h", 10800),
        ("90m", 5400),
        ("1h30m", 5400),
        ("45s", 45),
        ("10", 10),
        ("0.5s", 0.5),
        ("90d", 90 * 86400),
        ("1d12h", 36 * 3600),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "3w", "d", "h", "-1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
    result = CliRunner().invoke(cli, ["run", "--date", "2026-11-22", "--deadline", text])
    assert result.exit_code == 2 and "--deadline" in result.stderr


def _run(*args: str):
    base = ["run", "--audience", "a.txt", "--message", "m.json", "--topic-prefix", "jobreco"]
    base.append("--backfill")
    return CliRunner().invoke(cli, [*base, *args], env={"DATABASE_URL": "postgresql://x/y"})


def test_bad_date_is_bad_input_with_json_error() -> None:
    result = _run("--date", "2026-13-01", "--json")
    assert result.exit_code == 2
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["kind"] == "bad_input" and "--date '2026-13-01'" in payload["error"]
    assert "expected YYYY-MM-DD" in result.stderr


def test_bad_prefix_is_bad_input() -> None:
    result = _run("--date", "2026-11-22", "--topic-prefix", "bad/prefix")
    assert result.exit_code == 2
    assert "breaks FCM's topic-name rule" in result.stderr


def test_options_come_from_environment() -> None:
    result = CliRunner().invoke(
        cli,
        ["run", "--audience", "a.txt", "--message", "m.json", "--date", "2026-11-22", "--backfill"],
        env={"TOPIC_SYNC_TOPIC_PREFIX": "bad prefix", "DATABASE_URL": "postgresql://x/y"},
    )
    assert result.exit_code == 2 and "'bad prefix'" in result.stderr


def test_progress_logs_periodically_without_a_terminal(capsys) -> None:
    now = [100.0]
    line = ProgressLine(tty=False, every=10, clock=lambda: now[0])
    for done in range(0, 1000, 100):
        now[0] += 3
        line(Progress(Op.SUBSCRIBE, done, 1000, 2, started=100.0))
    line(Progress(Op.SUBSCRIBE, 1000, 1000, 2, started=100.0))
    lines = capsys.readouterr().err.strip().splitlines()
    assert 3 <= len(lines) <= 5  # every ~10 s of 30, plus the final line
    assert lines[-1].startswith("subscribe: 1000/1000 (100%)") and "2 failed" in lines[-1]


def test_progress_redraws_one_line_on_a_terminal(capsys) -> None:
    now = [0.0]
    line = ProgressLine(tty=True, clock=lambda: now[0])
    for done in (10, 20, 30):
        now[0] += 1
        line(Progress(Op.UNSUBSCRIBE, done, 30, 0, started=0.0))
    err = capsys.readouterr().err
    assert err.count("\r") == 3 and err.endswith("\n")
    assert "unsubscribe: 30/30 (100%) 10 tokens/s" in err


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
@pytest.mark.parametrize("command", ["run", "reconcile"])
def test_a_date_far_from_today_needs_backfill(command, day) -> None:
    args = [command, "--date", day, "--topic-prefix", "jobreco", "--json"]
    if command == "run":
        args += ["--audience", "a.txt", "--message", "m.json"]
    env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    refused = CliRunner().invoke(cli, args, env=env)
    assert refused.exit_code == 2
    assert "outside the window" in refused.stderr and "--backfill" in refused.stderr
    assert json.loads(refused.stdout)["kind"] == "bad_input"
    # With --backfill the date is accepted; what stops it next is the (absent) database.
    allowed = CliRunner().invoke(cli, [*args, "--backfill"], env=env)
    assert allowed.exit_code == 1 and "cannot reach the database" in allowed.stderr


def test_today_and_yesterday_are_inside_the_window() -> None:
    import datetime as dt

    from topic_sync.app.settings import resolve

    for day in ("today", "yesterday"):
        resolved = resolve({}, {}, day=day, environ={}, now=dt.datetime.now(dt.UTC))
        resolved.check_date_window(backfill=False)


@pytest.mark.parametrize(
    ("changes", "warned"),
    [
        ({"live": True}, True),
        ({"live": False}, False),
        ({"live": True, "database_url": "postgresql://db/x"}, False),
        ({"live": True, "emulator_host": "127.0.0.1:9099"}, False),
    ],
)
def test_live_production_with_the_embedded_database_warns_loudly(changes, warned) -> None:
    from topic_sync.app.commands import warn_if_trying_in_production
    from topic_sync.app.services import Io
    from topic_sync.settings import DEFAULTS

    lines: list[str] = []
    warn_if_trying_in_production(DEFAULTS.replace(**changes), Io(log=lines.append, environ={}))
    assert bool(lines) is warned
    assert all(line.startswith("WARNING: changing production FCM") for line in lines)


@pytest.mark.parametrize(
    "args",
    [["run", "--json", "--no-such-option"], ["run", "--json", "--pool-size", "abc"], ["--json"]],
)
def test_usage_errors_print_exactly_one_json_object(args, capsys) -> None:
    from topic_sync.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    document = json.loads(out[0])
    assert document["kind"] == "bad_input" and document["exit_code"] == 2


def test_every_command_is_found_by_its_name() -> None:
    import click

    from topic_sync.cli.main import COMMANDS

    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted([*COMMANDS, "config"])
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name


def test_a_run_imports_only_what_it_needs() -> None:
    # Every command's module used to be imported at start-up (seconds of a day's run on a
    # loaded machine): a run must not load the scheduler, the reports, the emulator, or
    # Alembic (the schema check reads the migrations' head without it).
    import subprocess
    import sys

    probe = (
        "import sys, click\n"
        "from topic_sync.cli.main import cli\n"
        "cli.get_command(click.Context(cli), 'run')\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "topic_sync.cli.run" in loaded and "topic_sync.engine.run" in loaded
    unneeded = {
        "alembic",
        "apscheduler",
        "topic_sync.app.scheduler",
        "topic_sync.app.demo",
        "topic_sync.emulator",
        "topic_sync.cli.admin",
        "topic_sync.cli.reports",
        "topic_sync.cli.repairs",
    }
    assert loaded & unneeded == set()
