"""Bad input of every kind, through the real CLI: each is refused with its documented exit
code and a message that says where the problem is, never a traceback, exactly one JSON object
with --json, and nothing changed, neither in PostgreSQL nor in FCM.

Every case starts from a fresh database and a fresh emulator holding one published live day
(made in-process, which is quick; one case needs a database not yet bound to an FCM target
and starts empty). The bad command is then, for `run`, a live run of the next day on the same
topic, so anything it let through would change the table or FCM. Inputs that only look odd
(a byte order mark, CRLF) are checked to be read in full by a dry run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tests.support import (
    DAY1,
    PROJECT,
    describe,
    make_tokens,
    run_args,
    run_cli,
    subscription_calls,
    summary,
    topic,
    write_lines,
)
from topic_sync.app import commands
from topic_sync.app.services import Io
from topic_sync.config.resolve import Resolved
from topic_sync.config.table import DEFAULTS
from topic_sync.emulator import FcmEmulator
from topic_sync.store import db

PREFIX = "badreco"
POOL = 1  # day 1 and day 2 share the topic: a bad day 2 has day 1's members to destroy
DAY2 = DAY1 + dt.timedelta(days=1)
TOPIC = topic(PREFIX, POOL, DAY1)
BASE = make_tokens("b", range(30))  # day 1's audience, subscribed and published
GOOD = BASE[:3]
# Day 2's good audience: 5 leave, 5 join. A run that got through would change both sides.
DAY2_AUDIENCE = [*BASE[:25], *make_tokens("b", range(30, 35))]
MESSAGE = '{"notification": {"title": "Jobs for {date}", "body": "Your picks are ready"}}'
SECRET = "s3cret-pw-42"
NO_TRACEBACK = "Traceback (most recent call last)"
KINDS = {1: "failed", 2: "bad_input", 6: "credentials", 11: "database_unavailable"}


# --- the world a case runs in ---------------------------------------------------------------


@dataclasses.dataclass
class World:
    tmp: Path
    env: dict[str, str]
    emulator: FcmEmulator
    database_url: str
    audience: Path  # day 2's good audience
    message: Path  # a good message


@dataclasses.dataclass
class Bad:
    """One bad command: what it must exit with and what its error must say."""

    args: list[str]
    code: int
    expect: tuple[str, ...]  # each must appear on stderr and in the JSON's "error"
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    unset: tuple[str, ...] = ()
    # A live run validates the message with FCM (validate_only) before reading the audience.
    validates: bool = False
    prior: bool = True  # start from a published day 1 (False: an empty, unbound database)
    before: Callable[[], None] | None = None  # after the prior state, before the snapshots
    secrets: tuple[str, ...] = ()  # must appear nowhere in the output
    stderr: tuple[str, ...] = ()  # must appear on stderr (the JSON's "error" need not say it)
    forbid: tuple[str, ...] = ()  # must not appear in the error: it would mislead


def seed_day1(w: World) -> None:
    """Day 1, live and published, exactly as `topic-sync run` would do it (in-process)."""
    settings = DEFAULTS.replace(
        topic_prefix=PREFIX,
        pool_size=POOL,
        audience=write_lines(w.tmp / "day1.txt", BASE),
        message=w.message,
        live=True,
        propagation_delay=0.0,
        retry_min_wait=0.0,
        retry_max_wait=0.0,
        database_url=w.database_url,
        emulator_host=w.emulator.host_port,
        project=PROJECT,
    )
    result = commands.run_day(
        Resolved(settings, {}, day=DAY1), Io(log=lambda _line: None, environ={})
    )
    assert result.status == "published", result
    assert w.emulator.members(TOPIC) == set(BASE)


def full_snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (the target binding and fences too), in a stable order."""
    with engine.connect() as conn:
        tables = conn.execute(
            text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                "AND table_type = 'BASE TABLE' AND table_name <> 'alembic_version'"
            )
        ).scalars()
        return {
            table: sorted(
                (tuple(row) for row in conn.execute(text(f'SELECT * FROM "{table}"'))), key=repr
            )
            for table in sorted(tables)
        }


def fcm_state(emulator: FcmEmulator) -> dict[str, Any]:
    state = emulator.state()
    return {
        "topics": state["topics"],
        "publishes": state["publishes"],
        "unregistered": state["unregistered"],
        "subscription_calls": subscription_calls(emulator),
    }


# --- command lines --------------------------------------------------------------------------


def run_cmd(
    w: World,
    *,
    audience: Path | None = None,
    message: Path | None = None,
    day: dt.date | str = DAY2,
    prefix: str = PREFIX,
    pool: int = POOL,
    transport: str = "v1",
    extra: tuple[str, ...] = (),
    backfill: bool = True,
    live: bool = True,
) -> list[str]:
    """A run of day 2 (--json, no waiting); `backfill=False` keeps the date window."""
    args = run_args(
        day,
        audience or w.audience,
        message or w.message,
        prefix=prefix,
        pool_size=pool,
        transport=transport,
        live=live,
        extra=extra,
    )
    if not backfill:
        args.remove("--backfill")
    return args


def reconcile_cmd(*extra: str, prefix: str = PREFIX, pool: str = str(POOL)) -> list[str]:
    return [
        "reconcile",
        "--topic-prefix",
        prefix,
        "--pool-size",
        pool,
        "--live",
        "--json",
        "--retry-min-wait",
        "0",
        "--retry-max-wait",
        "0",
        *extra,
    ]


def forget_cmd(*extra: str) -> list[str]:
    return ["forget", *extra, "--live", "--json", "--retry-min-wait", "0", "--retry-max-wait", "0"]


# --- files ----------------------------------------------------------------------------------


def lines_bytes(lines: list[str], *, end: str = "\n") -> bytes:
    return "".join(line + end for line in lines).encode("utf-8")


def write_bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def bad_audience(
    w: World, content: bytes, line: int | None, reason: str, name: str = "audience.txt"
) -> Bad:
    """A live day 2 on an audience file with a problem at `line` (None: the whole file)."""
    path = write_bytes(w.tmp / name, content)
    where = f"{path}:{line}: " if line else f"{path}: "
    return Bad(run_cmd(w, audience=path), 2, (where + reason,), validates=True)


def bad_token(w: World, token: str, reason: str) -> Bad:
    """Good tokens around one implausible token on line 3."""
    return bad_audience(w, lines_bytes([GOOD[0], GOOD[1], token, GOOD[2]]), 3, reason)


def not_allowed(char: str) -> str:
    return f"character {char!r} not allowed"


def bad_message(w: World, content: str, where: str, *reasons: str) -> Bad:
    """`where` is ":LINE" or "" (then the first reason should name the field)."""
    path = w.tmp / "bad-message.json"
    path.write_text(content)
    first, *rest = reasons
    return Bad(run_cmd(w, message=path), 2, (f"{path}{where}: {first}", *rest))


def unix_socket(path: Path) -> Path:
    """A socket file: open() fails with ENXIO, for root too."""
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
    finally:
        sock.close()
    return path


def config_file(
    w: World, *extra: str, campaign: tuple[str, ...] = (f"pool_size = {POOL}",)
) -> Path:
    """A configuration file for the campaign; `campaign` lines go inside its table."""
    path = w.tmp / "topic-sync.toml"
    path.write_text(
        "\n".join(
            [
                'database_url = "env:DATABASE_URL"',
                *extra,
                "[campaigns.jobreco]",
                f'topic_prefix = "{PREFIX}"',
                *campaign,
                'message = "message.json"',
                f'audience = "{w.tmp}/{{date}}.txt"',
                "",
            ]
        )
    )
    write_lines(w.tmp / f"{DAY2}.txt", DAY2_AUDIENCE)
    return path


def config_cmd(path: Path) -> list[str]:
    return ["config", "show", "--config", str(path), "--json"]


def window(day: str) -> tuple[str, ...]:
    return (f"--date {day}: outside the window of", "--backfill")


def unreachable_db(w: World, args: list[str]) -> Bad:
    url = f"postgresql://topic_sync:{SECRET}@127.0.0.1:1/topic_sync"
    return Bad(
        args,
        11,
        ("is unavailable", "127.0.0.1:1"),
        env={"DATABASE_URL": url},
        secrets=(SECRET,),
    )


def unknown_role(w: World) -> Bad:
    """Authentication that fails whatever the server's auth method (even trust)."""
    url = make_url(db.sqlalchemy_url(w.database_url)).set(
        username="no_such_role_xyz", password=SECRET
    )
    return Bad(
        run_cmd(w),
        11,
        ("is unavailable", "no_such_role_xyz"),
        env={"DATABASE_URL": url.render_as_string(hide_password=False)},
        secrets=(SECRET,),
    )


def emulator_down(w: World, host_port: str, **kw: Any) -> Bad:
    """FCM (here the emulator) does not answer: exit 1, saying where it was dialled and that
    nobody answered, not that FCM refused the message (nobody refused anything)."""
    return Bad(
        run_cmd(w),
        1,
        ("Connection refused",),
        stderr=(host_port,),
        forbid=("refused the message",),
        **kw,
    )


def emulator_stopped(w: World) -> Bad:
    """The emulator the state is bound to stops answering (its port now refuses)."""
    return emulator_down(w, w.emulator.host_port, before=w.emulator.stop)


def credentials(w: World, content: str | None, args: list[str]) -> Bad:
    path = w.tmp / "service-account.json"
    if content is not None:
        path.write_text(content)
    return Bad(
        args,
        6,
        ("cannot load the Firebase credentials", str(path)),
        env={"GOOGLE_APPLICATION_CREDENTIALS": str(path)},
        unset=("FCM_EMULATOR_HOST",),
    )


BIG_DATA = json.dumps({"data": {"blob": "x" * 2100}})

CASES: dict[str, Callable[[World], Bad]] = {
    # --- audience files: the whole file
    "audience-empty": lambda w: bad_audience(w, b"", None, "no tokens"),
    "audience-blank-lines-only": lambda w: bad_audience(w, b"\n  \n\t\n\n", None, "no tokens"),
    "audience-csv-header-only": lambda w: bad_audience(
        w, b"token\n", None, "no tokens", "audience.csv"
    ),
    "audience-csv-without-token-column": lambda w: bad_audience(
        w,
        lines_bytes(["id,device", f"1,{GOOD[0]}"]),
        1,
        "no 'token' column in the CSV header",
        "audience.csv",
    ),
    "audience-directory": lambda w: Bad(
        run_cmd(w, audience=w.tmp), 2, (f"{w.tmp}: is a directory",), validates=True
    ),
    "audience-missing": lambda w: Bad(
        run_cmd(w, audience=w.tmp / "absent.txt"),
        2,
        (f"{w.tmp / 'absent.txt'}: no such file",),
        validates=True,
    ),
    "audience-socket-cannot-open": lambda w: Bad(
        run_cmd(w, audience=unix_socket(w.tmp / "a.sock")),
        2,
        (f"{w.tmp / 'a.sock'}: cannot open",),
        validates=True,
    ),
    "audience-read-error": lambda w: Bad(
        run_cmd(w, audience=Path("/proc/self/mem")),
        2,
        ("/proc/self/mem: read error",),
        validates=True,
    ),
    "audience-utf16": lambda w: bad_audience(
        w, "\n".join(GOOD).encode("utf-16"), 1, "NUL byte in line (a binary or UTF-16 file?)"
    ),
    "audience-10mb-line": lambda w: bad_audience(
        w, b"A" * (10 << 20), 1, "line is longer than 1048576 bytes"
    ),
    # --- audience files: one line
    "audience-nul-byte": lambda w: bad_audience(
        w,
        lines_bytes([GOOD[0], GOOD[1]]) + b"b00099\0:APA91b\n" + lines_bytes([GOOD[2]]),
        3,
        "NUL byte in line",
    ),
    "audience-not-utf8": lambda w: bad_audience(
        w,
        lines_bytes([GOOD[0]]) + b"b00099:APA\xff91b\n" + lines_bytes(GOOD[1:]),
        2,
        "not valid UTF-8",
    ),
    "audience-truncated-mid-character": lambda w: bad_audience(
        w, lines_bytes(GOOD) + "b00099:APA91bé".encode()[:-1], 4, "not valid UTF-8"
    ),
    "audience-truncated-eof-marker": lambda w: bad_audience(
        w, lines_bytes(GOOD) + b"b00099:APA9\x1a", 4, not_allowed("\x1a")
    ),
    "audience-truncated-csv-row": lambda w: bad_audience(
        w,
        lines_bytes(["token,score", f"{GOOD[0]},0.9", f"{GOOD[1]},0.8"]) + b"b00099:APA9",
        4,
        "the last line does not end with a newline: the audience may have been cut short",
        "audience.csv",
    ),
    "audience-space-inside": lambda w: bad_token(w, "b00099:APA91b E2e", "whitespace inside token"),
    "audience-dot": lambda w: bad_token(w, ".", "a token needs at least one letter or digit"),
    "audience-dot-dot": lambda w: bad_token(w, "..", "a token needs at least one letter or digit"),
    "audience-slash": lambda w: bad_token(w, "b00099/APA91b", not_allowed("/")),
    "audience-question-mark": lambda w: bad_token(w, "b00099?APA91b=1", not_allowed("?")),
    "audience-hash": lambda w: bad_token(w, "b00099#APA91b", not_allowed("#")),
    "audience-percent": lambda w: bad_token(w, "b00099%2FAPA91b", not_allowed("%")),
    # --- message files
    "message-invalid-json": lambda w: bad_message(
        w, '{\n  "notification": {"title": "Jobs",\n    "body": }\n}\n', ":3", "invalid JSON"
    ),
    "message-nan": lambda w: bad_message(
        w,
        '{\n  "notification": {"title": "Jobs", "body": "b"},\n  "android": {"ttl": NaN}\n}\n',
        ":3",
        "invalid JSON",
        "NaN",
    ),
    "message-duplicate-key": lambda w: bad_message(
        w,
        '{\n  "notification": {"title": "Jobs", "body": "b"},\n  "notification": {}\n}\n',
        ":3",
        "invalid JSON",
        '"notification" appears twice',
    ),
    "message-unknown-field": lambda w: bad_message(
        w,
        '{"notification": {"title": "Jobs", "body": "b", "colour": "red"}}',
        "",
        "notification.colour",
    ),
    "message-topic-target": lambda w: bad_message(
        w, '{"topic": "jobreco-1", "notification": {"title": "t"}}', "", "topic: remove this field"
    ),
    "message-token-target": lambda w: bad_message(
        w,
        '{"token": "b00001:APA91b", "notification": {"title": "t"}}',
        "",
        "token: remove this field",
    ),
    "message-over-2kb": lambda w: bad_message(w, BIG_DATA, "", "payload is", "at most 2048"),
    # --- options
    "run-date-far-past": lambda w: Bad(
        run_cmd(w, day="0001-01-01", backfill=False), 2, window("0001-01-01")
    ),
    "run-date-far-future": lambda w: Bad(
        run_cmd(w, day="9999-12-31", backfill=False), 2, window("9999-12-31")
    ),
    "run-pool-size-0": lambda w: Bad(run_cmd(w, pool=0), 2, ("'--pool-size'", "0 is not in")),
    "run-pool-size-negative": lambda w: Bad(
        run_cmd(w, pool=-1), 2, ("'--pool-size'", "-1 is not in")
    ),
    "run-pool-size-2001": lambda w: Bad(
        run_cmd(w, pool=2001), 2, ("'--pool-size'", "2001 is not in")
    ),
    "run-prefix-slash": lambda w: Bad(
        run_cmd(w, prefix="a/b"), 2, ("topic prefix 'a/b' breaks FCM's topic-name rule",)
    ),
    "run-prefix-empty": lambda w: Bad(
        run_cmd(w, prefix=""), 2, ("topic prefix must not be empty",)
    ),
    "run-prefix-topics-path": lambda w: Bad(
        run_cmd(w, prefix="/topics/x"), 2, ("topic prefix '/topics/x': give the bare name",)
    ),
    "run-unknown-transport": lambda w: Bad(
        run_cmd(w, transport="carrier-pigeon"), 2, ("'--transport'", "'carrier-pigeon'")
    ),
    "run-concurrency-0": lambda w: Bad(
        run_cmd(w, extra=("--concurrency", "0")), 2, ("'--concurrency'", "0 is not in")
    ),
    "reconcile-pool-size-0": lambda w: Bad(
        reconcile_cmd(pool="0"), 2, ("'--pool-size'", "0 is not in")
    ),
    "reconcile-prefix-slash": lambda w: Bad(
        reconcile_cmd(prefix="a/b"), 2, ("topic prefix 'a/b' breaks FCM's topic-name rule",)
    ),
    "forget-concurrency-0": lambda w: Bad(
        forget_cmd(GOOD[0], "--concurrency", "0"), 2, ("'--concurrency'", "0 is not in")
    ),
    "config-show-pool-size-2001": lambda w: Bad(
        [*config_cmd(config_file(w)), "--pool-size", "2001"], 2, ("'--pool-size'", "2001 is not in")
    ),
    # --- environment
    "run-database-unreachable": lambda w: unreachable_db(w, run_cmd(w)),
    "reconcile-database-unreachable": lambda w: unreachable_db(w, reconcile_cmd()),
    "forget-database-unreachable": lambda w: unreachable_db(w, forget_cmd(GOOD[0])),
    "run-database-unknown-role": unknown_role,
    "run-credentials-missing": lambda w: credentials(w, None, run_cmd(w)),
    "run-credentials-malformed": lambda w: credentials(
        w, '{"type": "service_account",', run_cmd(w)
    ),
    "run-credentials-incomplete": lambda w: credentials(
        w, '{"type": "service_account", "project_id": "demo-e2e"}', run_cmd(w)
    ),
    "reconcile-credentials-missing": lambda w: credentials(w, None, reconcile_cmd()),
    "forget-credentials-malformed": lambda w: credentials(w, "not json", forget_cmd(GOOD[0])),
    "run-emulator-not-answering": lambda w: emulator_down(
        w, "127.0.0.1:1", env={"FCM_EMULATOR_HOST": "127.0.0.1:1"}, prior=False
    ),
    "run-emulator-stopped": emulator_stopped,
    # --- reconcile and forget
    "forget-bad-token": lambda w: Bad(
        forget_cmd(GOOD[0], "b00099/APA91b"), 2, ("token 'b000…'", not_allowed("/"))
    ),
    "forget-nothing": lambda w: Bad(forget_cmd(), 2, ("give tokens to forget, or --from-file",)),
    "forget-from-file-bad-line": lambda w: Bad(
        forget_cmd("--from-file", str(write_lines(w.tmp / "gone.txt", [GOOD[0], "two tokens"]))),
        2,
        (f"{w.tmp / 'gone.txt'}:2: whitespace inside token",),
    ),
    "forget-from-file-missing": lambda w: Bad(
        forget_cmd("--from-file", str(w.tmp / "absent.txt")),
        2,
        (f"{w.tmp / 'absent.txt'}: no such file",),
    ),
    "reconcile-sample-without-audit": lambda w: Bad(
        reconcile_cmd("--sample", "5"), 2, ("--sample goes with --audit",)
    ),
    "reconcile-date-far": lambda w: Bad(
        reconcile_cmd("--date", "0001-01-01"), 2, window("0001-01-01")
    ),
    # --- configuration files
    "config-unknown-key": lambda w: Bad(
        config_cmd(p := config_file(w, campaign=(f"pool_size = {POOL}", 'colour = "red"'))),
        2,
        (f"{p}: campaigns.jobreco.colour: unknown key",),
    ),
    "config-bad-pool-size": lambda w: Bad(
        config_cmd(p := config_file(w, campaign=("pool_size = 0",))),
        2,
        (f"{p}: campaigns.jobreco.pool_size: must be between 1 and 2000",),
    ),
    "config-invalid-toml": lambda w: Bad(
        config_cmd(p := config_file(w, "grace = = 1")), 2, (f"{p}:2: invalid TOML",)
    ),
    "config-missing": lambda w: Bad(
        config_cmd(w.tmp / "absent.toml"), 2, (f"{w.tmp / 'absent.toml'}: no such configuration",)
    ),
    "run-config-unknown-key": lambda w: Bad(
        [
            "run",
            "--config",
            str(p := config_file(w, campaign=(f"pool_size = {POOL}", 'colour = "red"'))),
            "--date",
            str(DAY2),
            "--backfill",
            "--live",
            "--json",
        ],
        2,
        (f"{p}: campaigns.jobreco.colour: unknown key",),
    ),
    "reconcile-config-bad-pool-size": lambda w: Bad(
        [
            "reconcile",
            "--config",
            str(p := config_file(w, campaign=("pool_size = 2001",))),
            "--live",
            "--json",
        ],
        2,
        (f"{p}: campaigns.jobreco.pool_size: must be between 1 and 2000",),
    ),
}


@pytest.fixture
def world(tmp_path: Path, env: dict[str, str], emulator: FcmEmulator, database_url: str) -> World:
    message = tmp_path / "message.json"
    message.write_text(MESSAGE)
    audience = write_lines(tmp_path / "day2.txt", DAY2_AUDIENCE)
    return World(tmp_path, env, emulator, database_url, audience, message)


def cli_env_for(w: World, bad: Bad) -> dict[str, str]:
    env = {k: v for k, v in w.env.items() if k not in bad.unset}
    env.update(bad.env)
    return env


def snapshots(engine: Engine, emulator: FcmEmulator) -> tuple[Any, Any]:
    return full_snapshot(engine), fcm_state(emulator)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_and_changes_nothing(world: World, engine: Engine, case: str):
    bad = CASES[case](world)
    if bad.prior:
        seed_day1(world)
    if bad.before:
        bad.before()
    before, validations = snapshots(engine, world.emulator), len(world.emulator.validations)

    proc = run_cli(*bad.args, env=cli_env_for(world, bad))

    # Nothing changed, whatever else is wrong: checked first.
    assert snapshots(engine, world.emulator) == before, describe(proc)
    # At most a live run's validate_only send, which changes nothing in FCM.
    sent = len(world.emulator.validations) - validations
    assert sent <= (1 if bad.validates else 0), describe(proc)
    assert proc.returncode == bad.code, describe(proc)
    assert NO_TRACEBACK not in proc.stderr, describe(proc)
    error = summary(proc)
    assert (error["kind"], error["exit_code"]) == (KINDS[bad.code], bad.code), describe(proc)
    for fragment in bad.expect:
        assert fragment in proc.stderr, f"{fragment!r} not on stderr\n{describe(proc)}"
        assert fragment in error["error"], f"{fragment!r} not in the JSON\n{describe(proc)}"
    for fragment in bad.stderr:
        assert fragment in proc.stderr, f"{fragment!r} not on stderr\n{describe(proc)}"
    for fragment in bad.forbid:
        assert fragment not in proc.stderr, f"{fragment!r} misleads\n{describe(proc)}"
    for secret in bad.secrets:
        assert secret not in proc.stderr + proc.stdout, describe(proc)


# --- inputs that look odd but are valid ----------------------------------------------------

BOM = "\ufeff".encode()
VALID: dict[str, Callable[[Path], Path]] = {
    "utf8-bom": lambda d: write_bytes(d / "a.txt", BOM + lines_bytes(DAY2_AUDIENCE)),
    "crlf": lambda d: write_bytes(d / "a.txt", lines_bytes(DAY2_AUDIENCE, end="\r\n")),
    "bom-crlf-csv": lambda d: write_bytes(  # as a spreadsheet saves it
        d / "a.csv",
        BOM + lines_bytes(["Token,Score", *(f"{t},0.5" for t in DAY2_AUDIENCE)], end="\r\n"),
    ),
}


def dry_run_reads_day2(world: World, engine: Engine, path: Path) -> None:
    """A dry run of day 2 on this audience reads all of it and changes nothing."""
    before = snapshots(engine, world.emulator)

    proc = run_cli(*run_cmd(world, audience=path, live=False), env=world.env)

    assert snapshots(engine, world.emulator) == before, describe(proc)
    assert proc.returncode == 0, describe(proc)
    result = summary(proc)
    assert result["status"] == "dry-run"
    assert (result["audience"], result["duplicates"]) == (len(DAY2_AUDIENCE), 0)
    assert (result["to_add"], result["to_remove"]) == (5, 5)


@pytest.mark.parametrize("case", VALID)
def test_odd_but_valid_audience_is_read(world: World, engine: Engine, case: str):
    path = VALID[case](world.tmp)
    seed_day1(world)
    dry_run_reads_day2(world, engine, path)


def test_audience_of_mode_000(world: World, engine: Engine):
    """Refused as unreadable, except for root, who reads a file of mode 000 anyway (the
    socket and /proc/self/mem cases above are the unreadable files root cannot read)."""
    path = write_lines(world.tmp / "a.txt", DAY2_AUDIENCE)
    path.chmod(0)
    seed_day1(world)
    if os.geteuid() == 0:
        dry_run_reads_day2(world, engine, path)
        return
    before = snapshots(engine, world.emulator)

    proc = run_cli(*run_cmd(world, audience=path), env=world.env)

    assert snapshots(engine, world.emulator) == before, describe(proc)
    assert proc.returncode == 2, describe(proc)
    assert f"{path}: permission denied" in proc.stderr
    assert summary(proc)["kind"] == "bad_input"


# --- a wrong database password --------------------------------------------------------------


def test_wrong_database_password(world: World, engine: Engine):
    """Refused (exit 11, the password masked) by a server that checks passwords. A server
    that trusts its local socket, as the embedded test server does, accepts any password:
    then the run must work and still never print the password."""
    url = make_url(db.sqlalchemy_url(world.database_url)).set(password=SECRET)
    probe = create_engine(url, poolclass=NullPool)
    try:
        with probe.connect():
            checked = False
    except OperationalError:
        checked = True
    finally:
        probe.dispose()
    seed_day1(world)
    before = snapshots(engine, world.emulator)
    env = {**world.env, "DATABASE_URL": url.render_as_string(hide_password=False)}

    proc = run_cli(*run_cmd(world, live=False), env=env)  # a dry run: it only has to connect

    assert snapshots(engine, world.emulator) == before, describe(proc)
    assert SECRET not in proc.stderr + proc.stdout, describe(proc)
    assert NO_TRACEBACK not in proc.stderr, describe(proc)
    if checked:
        assert proc.returncode == 11, describe(proc)
        assert "is unavailable" in proc.stderr
        assert summary(proc)["kind"] == "database_unavailable"
    else:
        assert proc.returncode == 0, describe(proc)
        assert summary(proc)["status"] == "dry-run"
