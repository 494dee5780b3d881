"""The CLI layer: option parsing, error output, progress display."""

from __future__ import annotations

import json

import click
import hypothesis.strategies as st
import pytest
from click.testing import CliRunner
from hypothesis import given

from topic_sync.cli.main import cli
from topic_sync.cli.output import ProgressLine
from topic_sync.dates import parse_duration
from topic_sync.engine.types import Progress
from topic_sync.fcm.error_table import Op


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
    assert allowed.exit_code == 11 and "is unavailable" in allowed.stderr


def test_today_and_yesterday_are_inside_the_window() -> None:
    import datetime as dt

    from topic_sync.config.resolve import resolve

    for day in ("today", "yesterday"):
        resolved = resolve({}, {}, day=day, environ={}, now=dt.datetime.now(dt.UTC))
        resolved.check_date_window(backfill=False)


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({"live": True}, True),
        ({"live": False}, False),
        ({"live": True, "database_url": "postgresql://db/x"}, False),
        ({"live": True, "emulator_host": "127.0.0.1:9099"}, False),
    ],
)
def test_live_production_with_the_embedded_database_is_refused(changes, refused) -> None:
    from topic_sync.app.commands import refuse_embedded_in_production
    from topic_sync.app.services import Io
    from topic_sync.config.table import DEFAULTS
    from topic_sync.errors import ExitCode, Refused

    lines: list[str] = []
    io = Io(log=lines.append, environ={})
    if refused:
        with pytest.raises(Refused) as caught:
            refuse_embedded_in_production(DEFAULTS.replace(**changes), io)
        assert caught.value.exit_code is ExitCode.REFUSED
        assert "--allow-embedded-database" in caught.value.message
    else:
        refuse_embedded_in_production(DEFAULTS.replace(**changes), io)
    assert lines == []


def test_an_operator_may_allow_the_embedded_database_and_is_warned() -> None:
    from topic_sync.app.commands import refuse_embedded_in_production
    from topic_sync.app.services import Io
    from topic_sync.config.table import DEFAULTS

    lines: list[str] = []
    allowed = DEFAULTS.replace(live=True, allow_embedded_database=True)
    refuse_embedded_in_production(allowed, Io(log=lines.append, environ={}))
    assert len(lines) == 1 and lines[0].startswith("WARNING: the embedded PostgreSQL")


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


def test_the_process_entry_freezes_what_it_holds_before_it_exits(mocker) -> None:
    # The interpreter's last collections skip frozen objects: a tenth of a second a command.
    import gc

    from topic_sync.cli.main import entry

    mocker.patch("sys.argv", ["topic-sync", "--version"])
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as done:
            entry()
        assert done.value.code == 0 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def _all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    """Every command, as click finds them (the group loads its commands lazily)."""
    ctx = click.Context(group)
    found: list[tuple[str, click.Command]] = [(prefix.strip() or "topic-sync", group)]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            found += _all_commands(command, f"{prefix}{name} ")
        else:
            found.append((f"{prefix}{name}", command))
    return found


def test_every_option_of_every_command_can_come_from_topic_sync_option() -> None:
    """--older-than is TOPIC_SYNC_OLDER_THAN, emulator --port TOPIC_SYNC_PORT, as promised."""
    from topic_sync.config.table import env_name

    checked = 0
    for name, command in _all_commands(cli):
        for param in command.params:
            if not isinstance(param, click.Option) or param.name in ("help", "version"):
                continue
            long = next(opt for opt in param.opts if opt.startswith("--"))
            envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            assert env_name(long) in envvars, f"{name} {long}: {envvars}"
            checked += 1
    assert checked > 100


@pytest.mark.parametrize(
    ("command", "says", "never"),
    [
        (["run"], "Change FCM (and publish)", None),
        (["doctor"], "changes nothing either way", "Change FCM"),
        (["reconcile"], "never publishes", "(and publish)"),
        (["forget"], "reconcile --live", "(and publish)"),
        (["purge"], "Delete the rows", "FCM"),
        (["target", "bind"], "Change the binding", "publish"),
        (["target", "reset"], "Change the binding", "publish"),
    ],
)
def test_live_says_what_it_does_for_each_command(command, says, never) -> None:
    found = dict(_all_commands(cli))[" ".join(command)]
    live = next(p for p in found.params if p.name == "live")
    assert says in live.help
    assert never is None or never not in live.help


def test_report_json_does_not_go_with_another_format() -> None:
    result = CliRunner().invoke(cli, ["report", "--json", "--format", "csv"])
    assert result.exit_code == 2
    assert "--json is --format json" in result.stderr
    assert json.loads(result.stdout)["kind"] == "bad_input"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (10800.0, "3h"),
        (7200, "2h"),
        (5400, "1h30m"),
        (15.0003, "15s"),
        (2.5, "2.5s"),
        (0, "0s"),
        (90 * 86400.0, "90d"),
        (86400 + 3600 + 60 + 1, "1d1h1m1s"),
    ],
)
def test_durations_print_the_way_they_are_typed(seconds, shown) -> None:
    from topic_sync.dates import format_duration

    assert format_duration(seconds) == shown
    assert parse_duration(shown) == pytest.approx(seconds, abs=0.05)


@given(st.integers(min_value=0, max_value=400 * 86400))
def test_a_printed_duration_reads_back_as_the_same_seconds(seconds: int) -> None:
    from topic_sync.dates import format_duration

    assert parse_duration(format_duration(seconds)) == seconds


def test_config_show_prints_durations_as_typed() -> None:
    result = CliRunner().invoke(cli, ["config", "show", "--deadline", "90m"], env={})
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert lines["deadline"][0] == "1h30m" and lines["wait_timeout"][0] == "2h"
    assert lines["retention"][0] == "90d"


def test_the_commands_that_finish_a_day_repeat_the_command_line_and_mask_secrets() -> None:
    import datetime as dt
    from pathlib import Path

    from topic_sync.app.commands import how_to_finish
    from topic_sync.config.resolve import Source, resolve
    from topic_sync.errors import DeadlineReached, RemovalsUnconfirmed

    given = {
        "topic_prefix": "jobreco",
        "pool_size": 7,
        "audience": Path("/data/a b.csv"),
        "message": Path("/etc/m.json"),
        "database_url": "postgresql://sync:pw@db/x",
        "deadline": 5400.0,
        "allow_large_churn": True,
        "live": True,
    }
    sources = {name: Source.FLAG for name in given}
    now = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC)
    resolved = resolve(given, sources, day="today", environ={}, now=now)

    withheld = how_to_finish(resolved, RemovalsUnconfirmed("x"))
    repair, rerun = withheld.removeprefix("To finish 2026-11-22: ").split(", then ")
    assert repair == (
        "topic-sync reconcile --date 2026-11-22 --topic-prefix jobreco --pool-size 7 "
        "--database-url 'postgresql://sync:***@db/x' --live"
    )
    assert rerun == (
        "topic-sync run --date 2026-11-22 --topic-prefix jobreco --pool-size 7 "
        "--audience '/data/a b.csv' --message /etc/m.json --allow-large-churn --deadline 1h30m "
        "--database-url 'postgresql://sync:***@db/x' --live"
    )
    assert "pw" not in withheld
    assert how_to_finish(resolved, DeadlineReached("x")) == f"To finish 2026-11-22: {rerun}"


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
        # The ORM and the models (the tables' definitions, for migrations and doctor): the
        # run's SQL is written out.
        "sqlalchemy.orm",
        "topic_sync.store.models",
    }
    assert loaded & unneeded == set()
