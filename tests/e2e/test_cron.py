"""The cron wrapper (cron/topic-sync-cron) end to end, and the files that schedule it.

The wrapper runs the real CLI against PostgreSQL and the FCM emulator: a live day publishes,
every line it prints is timestamped, topic-sync's exit code comes out unchanged (bad input,
locked, withheld), and settings come from the env file. A stub topic-sync checks the
wrapper's own duties (environment, stream handling, any exit code, signals) in isolation.
The crontab and systemd units are parsed and checked against each other.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from tests.support import (
    CLI_TIMEOUT,
    DAY1,
    REPO_ROOT,
    db_snapshot,
    latest_publish,
    make_tokens,
    run_args,
    run_row,
    subscription_calls,
    subscriptions,
    topic,
    write_lines,
)
from topic_sync.emulator import FcmEmulator
from topic_sync.redact import shorten
from topic_sync.store import db

CRON_DIR = REPO_ROOT / "cron"
WRAPPER = CRON_DIR / "topic-sync-cron"
SERVICE = CRON_DIR / "topic-sync.service"
TIMER = CRON_DIR / "topic-sync.timer"
CRONTAB = CRON_DIR / "crontab.example"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ZONE = "Asia/Tokyo"
TOKYO = ZoneInfo(ZONE)
PREFIX = "cronreco"
STAMPED = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3})?Z) (.*)")


# --- helpers ---------------------------------------------------------------------------------


def wrapper_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """`base` plus what points the wrapper at this test's Python: its console script if the
    package is installed there, else `python -m topic_sync.cli`. No env file by default."""
    env = dict(base)
    env.update(
        TOPIC_SYNC_BIN=str(Path(sys.executable).parent),
        TOPIC_SYNC_PYTHON=sys.executable,
        TOPIC_SYNC_ENV_FILE="",
        TZ=ZONE,
    )
    env.update(extra)
    return env


def run_wrapper(*args: object, env: dict[str, str], cwd: Path = REPO_ROOT, wrapper: Path = WRAPPER):
    return subprocess.run(
        [str(wrapper), *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"


def stamped_lines(proc: subprocess.CompletedProcess[str]) -> list[tuple[dt.datetime, str]]:
    """The wrapper's output: stdout stays empty, every stderr line is 'TIMESTAMP text'."""
    assert proc.stdout == "", explain(proc)
    lines = proc.stderr.splitlines()
    assert lines, explain(proc)
    parsed = []
    for line in lines:
        match = STAMPED.fullmatch(line)
        assert match, f"line without an ISO-8601 UTC timestamp: {line!r}\n{explain(proc)}"
        parsed.append((dt.datetime.fromisoformat(match[1]), match[2]))
    return parsed


def texts(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [text for _, text in stamped_lines(proc)]


def json_summary(proc: subprocess.CompletedProcess[str]) -> dict:
    """The `--json` summary, which the wrapper timestamps and sends to stderr like the rest."""
    found = [json.loads(t) for t in texts(proc) if t.startswith("{")]
    assert len(found) == 1, explain(proc)
    return found[0]


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    return texts(proc)[-1]


def day_args(day, audience: Path, message: Path, *extra: str, pool_size: int = 1) -> list[str]:
    return run_args(day, audience, message, prefix=PREFIX, pool_size=pool_size, extra=extra)


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section -> key -> values in order (keys may repeat, as
    Environment= does). Comments, blank lines and backslash continuations as systemd reads
    them; a configparser would merge repeated keys."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = (pending + raw.strip()) if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=value: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"[{section}] {key}= set {len(values)} times"
    return values[0]


def environment(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    pairs = [
        item.partition("=")
        for value in unit["Service"].get("Environment", [])
        for item in shlex.split(value)
    ]
    return {key: val for key, _, val in pairs}


def crontab_lines() -> tuple[dict[str, str], list[str]]:
    """(variables, job lines) of the example crontab."""
    variables: dict[str, str] = {}
    jobs: list[str] = []
    for raw in CRONTAB.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\s*=.*", line):
            key, _, value = line.partition("=")
            variables[key.strip()] = value.strip()
        else:
            jobs.append(line)
    return variables, jobs


STUB = """#!/bin/sh
# A stand-in for topic-sync: reports what it was given, then exits as told.
echo "args:$*"
echo "stderr line" >&2
echo "umask:$(umask) lc_all:$LC_ALL unbuffered:$PYTHONUNBUFFERED tz:${TZ-}"
echo "path:$PATH"
echo "from env file:${FROM_ENV_FILE-unset}"
case "${STUB_EXIT:-0}" in
    TERM) kill -TERM $$ ;;
    STOP_ON_TERM)
        trap 'echo "SIGTERM: stopping after the current batch" >&2; echo stopped; exit 8' TERM
        echo ready
        sleep 5 >/dev/null 2>&1 &  # its output elsewhere: a signal may miss it
        wait ;;
esac
printf 'no newline at the end'
exit "${STUB_EXIT:-0}"
"""


def stub_directory(directory: Path, script: str) -> Path:
    """A new directory holding a stub `topic-sync` running `script` (and nothing else)."""
    directory.mkdir()
    stub = directory / "topic-sync"
    stub.write_text(script)
    stub.chmod(0o755)
    return directory


@pytest.fixture
def stub_bin(tmp_path: Path) -> Path:
    return stub_directory(tmp_path / "stub bin", STUB)


@pytest.fixture
def stub_env(stub_bin: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPIC_SYNC_")}
    env.update(TOPIC_SYNC_BIN=str(stub_bin), TOPIC_SYNC_ENV_FILE="", TZ=ZONE)
    return env


# --- the real CLI through the wrapper --------------------------------------------------------


def test_live_day_through_the_wrapper_publishes_with_every_line_timestamped(
    env, emulator: FcmEmulator, engine, tmp_path, message_file
):
    audience = make_tokens("c", range(60))
    path = write_lines(tmp_path / "audience.txt", audience)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)

    proc = run_wrapper(*day_args(DAY1, path, message_file), env=wrapper_env(env))

    after = dt.datetime.now(dt.UTC)
    assert proc.returncode == 0, explain(proc)
    lines = stamped_lines(proc)
    # UTC although TZ is Tokyo, in order, and taken while the run was going on.
    stamps = [stamp for stamp, _ in lines]
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after
    result = json_summary(proc)
    assert (result["status"], result["added"], result["failed"]) == ("published", 60, {})
    the_topic = topic(PREFIX, 1, DAY1)
    sent = latest_publish(emulator, the_topic)
    assert sent.recipients == set(audience)
    assert len(emulator.publishes) == 1
    assert run_row(engine, PREFIX, DAY1)["publish_state"] == "sent"
    assert lines[0][1].startswith("topic-sync-cron: starting topic-sync run")
    assert lines[-1][1] == "topic-sync-cron: topic-sync run exited 0 (done)"

    # A rerun of the published date sends nothing and still exits 0.
    again = run_wrapper(*day_args(DAY1, path, message_file), env=wrapper_env(env))
    assert again.returncode == 0, explain(again)
    assert len(emulator.publishes) == 1


def test_bad_input_exit_code_2_passes_through(env, emulator, engine, tmp_path, message_file):
    tokens = make_tokens("b", range(10))
    path = write_lines(tmp_path / "audience.txt", [*tokens[:4], "not a token", *tokens[4:]])
    before = db_snapshot(engine)

    proc = run_wrapper(*day_args(DAY1, path, message_file), env=wrapper_env(env))

    assert proc.returncode == 2, explain(proc)
    assert json_summary(proc)["kind"] == "bad_input"
    assert any("audience.txt" in t and "5" in t for t in texts(proc)), explain(proc)
    assert last_line(proc).endswith("exited 2 (bad input: nothing was changed)")
    assert db_snapshot(engine) == before
    assert subscription_calls(emulator) == 0 and emulator.publishes == []


def test_preflight_doctor_that_fails_keeps_the_run_from_starting(
    env, emulator, engine, tmp_path, message_file
):
    missing = tmp_path / "not-written-yet.txt"
    before = db_snapshot(engine)

    proc = run_wrapper(
        *day_args(DAY1, missing, message_file), env=wrapper_env(env, TOPIC_SYNC_PREFLIGHT="1")
    )

    assert proc.returncode == 9, explain(proc)
    documents = [json.loads(t) for t in texts(proc) if t.startswith("{")]
    assert [d["kind"] for d in documents] == ["doctor"], explain(proc)
    failed = [c["name"] for c in documents[0]["checks"] if c["status"] == "fail"]
    assert failed == ["audience"]
    assert last_line(proc) == (
        "topic-sync-cron: topic-sync doctor exited 9 (not ready: a doctor check failed, "
        "nothing was changed); not starting run"
    )
    assert db_snapshot(engine) == before and run_row(engine, PREFIX, DAY1) is None
    assert subscription_calls(emulator) == 0 and emulator.publishes == []


def test_preflight_doctor_that_passes_lets_the_day_run(
    env, emulator: FcmEmulator, engine, tmp_path, message_file
):
    audience = make_tokens("p", range(15))
    path = write_lines(tmp_path / "audience.txt", audience)

    proc = run_wrapper(
        *day_args(DAY1, path, message_file), env=wrapper_env(env, TOPIC_SYNC_PREFLIGHT="1")
    )

    assert proc.returncode == 0, explain(proc)
    documents = [json.loads(t) for t in texts(proc) if t.startswith("{")]
    assert [d.get("kind", "run") for d in documents] == ["doctor", "run"], explain(proc)
    assert documents[0]["ready"] is True and documents[1]["status"] == "published"
    assert latest_publish(emulator, topic(PREFIX, 1, DAY1)).recipients == set(audience)


def test_preflight_doctor_passes_for_standard_input_and_a_query(
    env, emulator: FcmEmulator, engine, tmp_path, message_file
):
    """Doctor neither fails for the audience's kind nor consumes it: the run after it reads
    the whole of standard input, and a query is only described."""
    audience = make_tokens("i", range(12))
    args = day_args(DAY1, Path("-"), message_file)
    proc = subprocess.run(
        [str(WRAPPER), *args],
        env=wrapper_env(env, TOPIC_SYNC_PREFLIGHT="1"),
        cwd=REPO_ROOT,
        input="".join(f"{t}\n" for t in audience),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, explain(proc)
    documents = [json.loads(t) for t in texts(proc) if t.startswith("{")]
    assert [d.get("kind", "run") for d in documents] == ["doctor", "run"], explain(proc)
    assert documents[1]["status"] == "published"
    assert latest_publish(emulator, topic(PREFIX, 1, DAY1)).recipients == set(audience)

    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE reco AS SELECT unnest(CAST(:t AS text[])) AS token"),
            {"t": audience[2:]},
        )
    at = args.index("--audience")
    query_args = [*args[:at], *args[at + 2 :], "--audience-query", "reco"]
    query_args[query_args.index("--date") + 1] = str(DAY1 + dt.timedelta(days=1))
    proc = run_wrapper(*query_args, env=wrapper_env(env, TOPIC_SYNC_PREFLIGHT="1"))
    assert proc.returncode == 0, explain(proc)
    documents = [json.loads(t) for t in texts(proc) if t.startswith("{")]
    assert [d.get("kind", "run") for d in documents] == ["doctor", "run"], explain(proc)
    assert latest_publish(emulator, topic(PREFIX, 1, DAY1)).recipients == set(audience[2:])


def test_locked_exit_code_3_passes_through(env, emulator, engine, tmp_path, message_file):
    path = write_lines(tmp_path / "audience.txt", make_tokens("l", range(5)))

    with db.advisory_lock(engine, f"campaign:{PREFIX}", what="test"):
        proc = run_wrapper(*day_args(DAY1, path, message_file), env=wrapper_env(env))

    assert proc.returncode == 3, explain(proc)
    assert json_summary(proc)["kind"] == "locked"
    assert last_line(proc).endswith("exited 3 (locked: another run holds this campaign's lock)")
    assert subscription_calls(emulator) == 0 and emulator.publishes == []


def test_withheld_exit_code_4_passes_through_on_a_reused_topic(
    env, emulator, engine, tmp_path, message_file
):
    """Pool of one: day 2 reuses day 1's topic, and a removal that keeps failing withholds
    day 2's message (exit 4) until a rerun confirms it."""
    day2 = DAY1 + dt.timedelta(days=1)
    base = make_tokens("w", range(20))
    stuck = base[0]
    day1 = run_wrapper(
        *day_args(DAY1, write_lines(tmp_path / "day1.txt", base), message_file),
        env=wrapper_env(env),
    )
    assert day1.returncode == 0, explain(day1)
    emulator.inject_token_error(stuck, "INTERNAL", op="unsubscribe")
    audience2 = base[1:] + make_tokens("w", range(20, 22))
    path2 = write_lines(tmp_path / "day2.txt", audience2)

    withheld = run_wrapper(
        *day_args(day2, path2, message_file, "--max-retries", "1"), env=wrapper_env(env)
    )

    assert withheld.returncode == 4, explain(withheld)
    assert json_summary(withheld)["kind"] == "withheld"
    assert any(shorten(stuck) in t for t in texts(withheld))
    assert last_line(withheld).endswith("exited 4 (withheld: not published)")
    assert len(emulator.publishes) == 1
    assert subscriptions(engine, topic(PREFIX, 1, day2))[stuck] == "pending_unsubscribe"

    emulator.clear_faults()
    rerun = run_wrapper(*day_args(day2, path2, message_file), env=wrapper_env(env))
    assert rerun.returncode == 0, explain(rerun)
    assert latest_publish(emulator, topic(PREFIX, 1, day2)).recipients == set(audience2)


def test_env_file_supplies_the_settings_of_a_run_without_arguments(
    env, emulator, engine, tmp_path, message_file
):
    """No arguments: `run --date today --live`, everything else from the env file, as in
    production. DATABASE_URL is only in the file."""
    settings_dir = tmp_path / "settings dir"
    settings_dir.mkdir()
    message = settings_dir / "message.json"
    message.write_text(message_file.read_text())
    audience = make_tokens("e", range(25))
    path = write_lines(settings_dir / "today's audience.txt", audience)
    settings = {
        "DATABASE_URL": env["DATABASE_URL"],
        "TOPIC_SYNC_AUDIENCE": str(path),
        "TOPIC_SYNC_MESSAGE": str(message),
        "TOPIC_SYNC_TOPIC_PREFIX": PREFIX,
        "TOPIC_SYNC_POOL_SIZE": "1",
        "TOPIC_SYNC_JSON": "1",
        "TOPIC_SYNC_PROPAGATION_DELAY": "0",
        "TOPIC_SYNC_RETRY_MIN_WAIT": "0",
        "TOPIC_SYNC_RETRY_MAX_WAIT": "0",
    }
    env_file = write_lines(
        tmp_path / "env",
        ["# topic-sync settings", *(f"{k}={shlex.quote(v)}" for k, v in settings.items())],
    )
    run_env = wrapper_env(env, TOPIC_SYNC_ENV_FILE=str(env_file))
    del run_env["DATABASE_URL"]
    today_before = dt.datetime.now(TOKYO).date()

    proc = run_wrapper(env=run_env)

    today_after = dt.datetime.now(TOKYO).date()
    assert proc.returncode == 0, explain(proc)
    result = json_summary(proc)
    assert result["status"] == "published"
    assert dt.date.fromisoformat(result["date"]) in {today_before, today_after}
    assert latest_publish(emulator, f"{PREFIX}-0").recipients == set(audience)
    assert run_row(engine, PREFIX, dt.date.fromisoformat(result["date"])) is not None
    assert not any("embedded PostgreSQL" in t for t in texts(proc))


def test_an_env_file_that_cannot_be_read_stops_before_running(
    env, emulator, tmp_path, message_file
):
    path = write_lines(tmp_path / "audience.txt", make_tokens("m", range(3)))
    missing = tmp_path / "no-such-env"

    proc = run_wrapper(
        *day_args(DAY1, path, message_file),
        env=wrapper_env(env, TOPIC_SYNC_ENV_FILE=str(missing)),
    )

    assert proc.returncode == 2, explain(proc)
    assert texts(proc) == [f"topic-sync-cron: error: cannot read the env file {missing}"]
    assert emulator.validations == [] and emulator.publishes == []


def _wrapper_without_installed_topic_sync(tmp_path: Path) -> Path:
    """A copy of the wrapper whose system directories hold every program but topic-sync,
    so the fallback is exercised even on a machine where topic-sync is installed."""
    system = tmp_path / "system-bin"
    system.mkdir()
    for directory in SYSTEM_PATH.split(":"):
        for program in Path(directory).glob("*") if Path(directory).is_dir() else ():
            target = system / program.name
            if program.name != "topic-sync" and not target.exists():
                target.symlink_to(program)
    wrapper = tmp_path / WRAPPER.name
    text = WRAPPER.read_text()
    assert f"readonly SYSTEM_PATH={SYSTEM_PATH}" in text
    wrapper.write_text(
        text.replace(f"readonly SYSTEM_PATH={SYSTEM_PATH}", f"readonly SYSTEM_PATH={system}")
    )
    wrapper.chmod(0o755)
    return wrapper


def test_without_the_console_script_it_runs_the_module_with_topic_sync_python(env, tmp_path):
    wrapper = _wrapper_without_installed_topic_sync(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    fallback = wrapper_env(env, TOPIC_SYNC_BIN=str(empty))

    proc = run_wrapper("--version", env=fallback, wrapper=wrapper)

    assert proc.returncode == 0, explain(proc)
    assert f"({sys.executable} -m topic_sync.cli)" in texts(proc)[0]
    assert any(t.startswith("topic-sync, version") for t in texts(proc))

    del fallback["TOPIC_SYNC_PYTHON"]
    not_found = run_wrapper("--version", env=fallback, wrapper=wrapper)
    assert not_found.returncode == 127, explain(not_found)
    assert "topic-sync not found" in last_line(not_found)


# --- the wrapper's own duties, with a stub topic-sync ----------------------------------------


DUMP_STUB = """#!/bin/sh
# Writes its environment, NUL-separated, where STUB_DUMP says.
env -0 > "$STUB_DUMP"
"""

# Each line as systemd's EnvironmentFile= reads it (src/basic/env-file.c), and what the
# variable then holds; None: the line sets nothing (and the wrapper says why on stderr).
NASTY_ENV_FILE = [
    ("# a comment; with = and 'quotes", {}),
    ("; a comment too", {}),
    (
        "DATABASE_URL=postgresql://u:p@db/x?sslmode=require&application_name=topic sync",
        {"DATABASE_URL": "postgresql://u:p@db/x?sslmode=require&application_name=topic sync"},
    ),
    ("  SPACED  =   inner  spaces kept   ", {"SPACED": "inner  spaces kept"}),
    ("SINGLE='it''s $HOME `id` \\n'", {"SINGLE": "its $HOME `id` \\n"}),
    ('DOUBLE="a \\"b\\" \\\\ \\$HOME \\` \\n c"', {"DOUBLE": 'a "b" \\ $HOME ` \\n c'}),
    ("JOINED=\"x\"'y'z", {"JOINED": "xyz"}),
    ("QUOTE_AFTER_TEXT=\"x\"y'z'", {"QUOTE_AFTER_TEXT": "xy'z'"}),
    ("ESCAPED=a\\ b\\#c\\\\", {"ESCAPED": "a b#c\\"}),
    ("HASH=value # not a comment", {"HASH": "value # not a comment"}),
    ('CONTINUED="line one \\\nline two"', {"CONTINUED": "line one line two"}),
    ("MULTI='first\nsecond'", {"MULTI": "first\nsecond"}),
    ("EMPTY=", {"EMPTY": ""}),
    ('EMPTY_QUOTED=""', {"EMPTY_QUOTED": ""}),
    ("SEMI=a;b|c>d", {"SEMI": "a;b|c>d"}),
    ("RUNS=$(touch {marker}) `touch {marker}`", {"RUNS": "$(touch {marker}) `touch {marker}`"}),
    ("CRLF=value\r", {"CRLF": "value"}),
    ("export NOT_A_NAME=1", None),
    ("1BAD=x", None),
    ("NO_EQUALS_SIGN", None),
    ("JOINS_NEXT=abc\\\nNEXT=1", {"JOINS_NEXT": "abcNEXT=1"}),
    ("LAST='never closed\n", {"LAST": "never closed\n"}),
]


def test_the_env_file_is_read_as_systemd_reads_it_never_run(stub_env, tmp_path):
    """Quotes, escapes, comments, an unquoted & or ; kept literally, command substitutions
    never run; lines systemd ignores are ignored too, and said."""
    marker = tmp_path / "was-run"
    lines = [line.replace("{marker}", str(marker)) for line, _ in NASTY_ENV_FILE]
    env_file = tmp_path / "env"
    env_file.write_bytes(("\n".join(lines)).encode())  # no newline at the end: still read
    dump = tmp_path / "dump"
    stub_env.update(
        TOPIC_SYNC_ENV_FILE=str(env_file),
        TOPIC_SYNC_BIN=str(stub_directory(tmp_path / "dump bin", DUMP_STUB)),
        STUB_DUMP=str(dump),
    )

    proc = run_wrapper("run", env=stub_env)

    assert proc.returncode == 0, explain(proc)
    got = dict(item.split("=", 1) for item in dump.read_text().split("\0") if item)
    expected: dict[str, str] = {}
    for _, values in NASTY_ENV_FILE:
        for key, value in (values or {}).items():
            expected[key] = value.replace("{marker}", str(marker))
    assert {key: got.get(key) for key in expected} == expected
    assert not marker.exists()
    for ignored in ("NOT_A_NAME", "1BAD", "NO_EQUALS_SIGN", "NEXT"):
        assert ignored not in got
    said = texts(proc)
    number, at = {}, 1  # the file line each entry starts on (some entries span two)
    for line in lines:
        number[line.split("=")[0].split()[-1]] = at
        at += line.count("\n") + 1
    warning = f"topic-sync-cron: warning: {env_file}"
    assert (
        f"{warning}:{number['NOT_A_NAME']}: 'export NOT_A_NAME' is not a variable name, ignored"
        in said
    )
    assert f"{warning}:{number['1BAD']}: '1BAD' is not a variable name, ignored" in said
    assert f"{warning}:{number['NO_EQUALS_SIGN']}: not KEY=value, ignored" in said
    assert any("the quote of LAST is never closed" in t for t in said)


def test_an_unquoted_ampersand_in_the_env_files_database_url_reaches_the_run(
    env, emulator, engine, tmp_path, message_file
):
    """The test database's URL has an & in its query (host=...&port=...): written unquoted, as
    an operator would, a shell would run half of it in the background and lose the rest."""
    assert "&" in env["DATABASE_URL"]
    audience = write_lines(tmp_path / "audience.txt", make_tokens("a", range(8)))
    env_file = write_lines(tmp_path / "env", [f"DATABASE_URL={env['DATABASE_URL']}"])
    run_env = wrapper_env(env, TOPIC_SYNC_ENV_FILE=str(env_file))
    del run_env["DATABASE_URL"]

    proc = run_wrapper(*day_args(DAY1, audience, message_file), env=run_env)

    assert proc.returncode == 0, explain(proc)
    assert json_summary(proc)["status"] == "published"
    assert run_row(engine, PREFIX, DAY1)["publish_state"] == "sent"
    assert not any("embedded PostgreSQL" in t for t in texts(proc))


def test_no_arguments_mean_a_live_run_today_in_a_fixed_environment(stub_env, stub_bin):
    stub_env.update(PATH="/nowhere", LC_ALL="C", PYTHONUNBUFFERED="")

    proc = run_wrapper(env=stub_env, cwd=stub_bin)

    assert proc.returncode == 0, explain(proc)
    lines = texts(proc)
    assert lines == [
        f"topic-sync-cron: starting topic-sync run ({stub_bin}/topic-sync)",
        "args:run --date today --live",
        "stderr line",
        f"umask:0027 lc_all:C.UTF-8 unbuffered:1 tz:{ZONE}",
        f"path:{stub_bin}:{SYSTEM_PATH}",
        "from env file:unset",
        "no newline at the end",
        "topic-sync-cron: topic-sync run exited 0 (done)",
    ]


def test_arguments_pass_through_unchanged_and_the_env_file_is_exported(
    stub_env, stub_bin, tmp_path
):
    venv = tmp_path / "venv"
    env_file = write_lines(
        tmp_path / "env", ["FROM_ENV_FILE='a value with spaces'", f"TOPIC_SYNC_VENV={venv}"]
    )
    stub_env.update(TOPIC_SYNC_ENV_FILE=str(env_file))

    proc = run_wrapper("reconcile", "--topic", "a b", "--live", env=stub_env)

    assert proc.returncode == 0, explain(proc)
    lines = texts(proc)
    assert "args:reconcile --topic a b --live" in lines
    assert "from env file:a value with spaces" in lines
    assert f"path:{stub_bin}:{venv}/bin:{SYSTEM_PATH}" in lines


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 42])
def test_every_exit_code_passes_through(stub_env, code):
    stub_env["STUB_EXIT"] = str(code)

    proc = run_wrapper("run", env=stub_env)

    assert proc.returncode == code, explain(proc)
    assert last_line(proc).startswith(f"topic-sync-cron: topic-sync run exited {code} (")


def test_preflight_runs_doctor_with_the_runs_own_arguments_first(stub_env):
    stub_env["TOPIC_SYNC_PREFLIGHT"] = "1"

    proc = run_wrapper(
        "run", "--date", "today", "--live", "--republish", "--full-tokens", env=stub_env
    )

    assert proc.returncode == 0, explain(proc)
    lines = texts(proc)
    doctor = lines.index("args:doctor --date today --live")
    run = lines.index("args:run --date today --live --republish --full-tokens")
    assert doctor < run
    # Other commands are not preceded by doctor.
    other = texts(run_wrapper("reconcile", "--live", env=stub_env))
    assert [line for line in other if line.startswith("args:")] == ["args:reconcile --live"]


def test_a_topic_sync_killed_by_a_signal_is_a_failure(stub_env):
    stub_env["STUB_EXIT"] = "TERM"

    proc = run_wrapper("run", env=stub_env)

    assert proc.returncode == 128 + signal.SIGTERM, explain(proc)
    assert last_line(proc).endswith(f"(killed by signal {int(signal.SIGTERM)})")


def test_stopping_the_process_group_logs_topic_sync_to_the_end_and_returns_its_code(stub_env):
    """What systemctl stop (SIGTERM to every process of the unit) or Ctrl-C does: topic-sync
    stops at a safe point while the wrapper and its timestamping outlive it."""
    stub_env["STUB_EXIT"] = "STOP_ON_TERM"
    proc = subprocess.Popen(
        [str(WRAPPER), "run"],
        env=stub_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        seen = []
        while not seen or not seen[-1].endswith(" ready\n"):
            line = proc.stderr.readline()
            assert line, f"the stub never got ready: {seen}"
            seen.append(line)
        os.killpg(proc.pid, signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "", "".join(seen) + rest)

    assert done.returncode == 8, explain(done)
    lines = texts(done)
    assert lines[-4:] == [
        "SIGTERM: stopping after the current batch",
        "stopped",
        "topic-sync-cron: received SIGTERM",
        "topic-sync-cron: topic-sync run exited 8 (interrupted: stopped at a safe point, "
        "a rerun resumes)",
    ]


def test_topic_sync_bin_may_name_the_executable_itself(stub_env, stub_bin, tmp_path):
    stub_env["TOPIC_SYNC_BIN"] = str(stub_bin / "topic-sync")
    # The caller's PATH finds nothing: the wrapper needs no program before it sets its own.
    (tmp_path / "empty").mkdir()
    stub_env["PATH"] = str(tmp_path / "empty")

    proc = run_wrapper("run", env=stub_env)

    assert proc.returncode == 0, explain(proc)
    assert f"path:{stub_bin}:{SYSTEM_PATH}" in texts(proc)


def test_the_wrapper_is_an_executable_bash_script():
    assert os.access(WRAPPER, os.X_OK)
    assert WRAPPER.read_text().startswith("#!/bin/bash\n")
    check = subprocess.run(["/bin/bash", "-n", str(WRAPPER)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


# --- crontab and systemd units ---------------------------------------------------------------


def test_crontab_runs_the_wrapper_at_0630_tokyo_time_without_flock():
    variables, jobs = crontab_lines()
    assert variables["CRON_TZ"] == ZONE
    assert variables["TZ"] == ZONE  # `--date today` is Tokyo's today, too
    assert variables["MAILTO"]
    assert len(jobs) == 1
    fields = jobs[0].split()
    assert fields[:5] == ["30", "6", "*", "*", "*"]
    assert fields[5:] == [_exec_start()]
    assert "flock" not in jobs[0]


def _exec_start() -> str:
    return one(parse_unit(SERVICE), "Service", "ExecStart")


def test_service_is_a_hardened_oneshot_running_the_wrapper():
    unit = parse_unit(SERVICE)
    service = unit["Service"]
    expected = {
        "Type": "oneshot",
        "User": "topic-sync",
        "EnvironmentFile": "-/etc/topic-sync/env",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
    }
    assert {key: one(unit, "Service", key) for key in expected} == expected
    assert Path(_exec_start()).name == WRAPPER.name
    # systemd has read the env file; the wrapper does not read it again.
    assert environment(unit)["TOPIC_SYNC_ENV_FILE"] == ""
    # A failed day stays failed: no exit code is declared a success, none restarts the run.
    assert "SuccessExitStatus" not in service and "Restart" not in service
    assert "network-online.target" in " ".join(unit["Unit"]["After"])


def test_timer_fires_daily_at_0630_tokyo_and_catches_up_once_after_downtime():
    timer = parse_unit(TIMER)
    assert one(timer, "Timer", "OnCalendar") == f"*-*-* 06:30:00 {ZONE}"
    assert one(timer, "Timer", "Persistent") == "true"
    assert one(timer, "Timer", "RandomizedDelaySec") == "0"
    assert one(timer, "Timer", "Unit") == SERVICE.name
    assert one(timer, "Install", "WantedBy") == "timers.target"
    # The service runs in the timer's zone, so `--date today` is the day the timer means.
    assert environment(parse_unit(SERVICE))["TZ"] == ZONE
