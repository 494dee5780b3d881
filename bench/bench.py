#!/usr/bin/env python3
"""Benchmark topic-sync against the local FCM emulator, next to the loops people write instead.

Run from the repository root with the project's virtualenv:

    .venv/bin/python bench/bench.py --tokens 50000 --churn 0.2 --latency-ms 0 --quota 0 \\
        --transport v1,v1-direct,legacy-iid --runs 3 --json out.json
    .venv/bin/python bench/bench.py --smoke  # CI: 10,000 tokens, default transport, v1 loop

What it does (bench/README.md says what every figure means):

0. Copies topic_sync/, migrations/ and itself into a temporary folder and runs everything
   from that copy, so edits to the checkout during a long run do not change what is measured.
1. Starts a private PostgreSQL (topic_sync.store.embedded.EmbeddedServer, in a temporary
   folder) and the FCM emulator (`python -m topic_sync.cli emulator`), each in its own
   processes, and sets the emulator's latency and quota through its control API.
2. Generates two days of FCM-shaped 160-character tokens from a seeded RNG: day 1 has
   --tokens tokens, day 2 is day 1 with --churn of them replaced by new ones.
3. For each subject (a topic-sync transport, or a baseline) and each run: a fresh database
   cloned from a migrated template, a reset emulator, then day 1 and day 2 on one topic,
   each command in its own process under a tiny wrapper that reports its wall time, CPU
   time and peak RSS. After each day it checks that the day's publish reached exactly the
   day's audience.
4. Prints markdown tables (median and min-max over runs) and, with --json, every raw figure.

Subjects run round-robin (run 1 of every subject, then run 2, ...), so a slow spell on a
shared machine spreads over all subjects instead of penalising one.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
# Where child processes import topic_sync from: a frozen copy once freeze_source() ran (the
# checkout may be edited while the benchmark runs; every command must run the same code).
_source_root = REPO_ROOT
PROJECT = "bench-project"
PREFIX = "bench"
TOPIC = f"{PREFIX}-0"  # --pool-size 1: every date maps to slot 0
DAYS = (dt.date(2026, 1, 5), dt.date(2026, 1, 6))  # far from today: runs need --backfill
TRANSPORTS = ("v1", "v1-direct", "legacy-iid")
DEFAULT_TRANSPORT = "v1-direct"  # topic-sync's default (tests/e2e/test_bench.py checks)
BASELINES = ("v1-loop", "legacy-loop", "per-device")
TOPIC_KINDS = ("subscribe", "unsubscribe", "batchAdd", "batchRemove")
PHASES = ("load", "plan", "removals", "additions", "publish")
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"
CHUNK = 1000  # tokens per firebase-admin topic-management call (its maximum)
PER_DEVICE_IN_FLIGHT = 10
LOOP_ATTEMPTS = 5  # a baseline loop resends a chunk's retryable failures this many times
LOOP_BACKOFF_SECONDS = 1.0
RETRYABLE = frozenset(
    {"RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "INTERNAL", "UNAVAILABLE", "UNKNOWN_ERROR"}
)
HEALTH_TIMEOUT_SECONDS = 30.0
SMOKE_TOKENS = 10_000
# PostgreSQL logs statements slower than this, lock waits and checkpoints; the benchmark
# reports them with the command they happened in.
SLOW_STATEMENT_MS = 1000
PG_SETTINGS = {
    "log_min_duration_statement": str(SLOW_STATEMENT_MS),
    "log_lock_waits": "on",
    "log_checkpoints": "on",
    "log_line_prefix": "%m [%p] ",
    "log_timezone": "UTC",
}
PG_LOG_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \S+ \[\d+\] ", re.MULTILINE)
PG_LOG_NOTABLE = re.compile(r"duration: |checkpoint complete|still waiting|acquired")

# Runs one command as its only child and prints one JSON line: exit code, wall seconds,
# CPU seconds and peak RSS (KiB on Linux) of that child alone. argv: stdout-file
# stderr-file command...
MEASURE = """\
import json, resource, subprocess, sys, time
out, err, *cmd = sys.argv[1:]
with open(out, "wb") as o, open(err, "wb") as e:
    start = time.perf_counter()
    rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e).returncode
    wall = time.perf_counter() - start
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
                  "maxrss_kb": ru.ru_maxrss}))
"""


# --- results ------------------------------------------------------------------------------------


@dataclass
class DayResult:
    """One command: one subject, one run, one day."""

    subject: str
    run: int
    day: int
    ok: bool = False
    error: str | None = None
    exit_code: int | None = None
    wall: float | None = None  # seconds, the whole command (interpreter start included)
    cpu: float | None = None  # user + system seconds of the command's process
    rss_mb: float | None = None  # its peak resident set (MiB)
    emulator_cpu: float | None = None  # CPU seconds the emulator spent meanwhile
    db_cpu: float | None = None  # CPU seconds PostgreSQL (all its processes) spent meanwhile
    io_stall: float | None = None  # machine-wide seconds some task waited on I/O (PSI)
    cpu_stall: float | None = None  # machine-wide seconds some task waited for a CPU (PSI)
    started: float | None = None  # when the command started and ended (time.time())
    ended: float | None = None
    to_add: int = 0
    to_remove: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    throttled: int = 0  # 429 answers to topic-management requests during the command
    topic_requests: int = 0  # topic-management requests the emulator answered
    recipients: int | None = None  # whom the day's message reached
    audience: int = 0
    summary: dict[str, Any] = field(default_factory=dict)  # the command's own JSON

    @property
    def operations(self) -> int:
        return self.to_add + self.to_remove

    @property
    def rate(self) -> float | None:
        return self.operations / self.wall if self.wall else None

    def phase_rate(self, phase: str) -> float | None:
        count = {"removals": self.to_remove, "additions": self.to_add}.get(phase)
        seconds = self.phases.get(phase)
        if not count or not seconds:
            return None
        return count / seconds

    @property
    def sync_rate(self) -> float | None:
        """Operations per second of the sync phases (removals and additions) together."""
        seconds = self.phases.get("removals", 0.0) + self.phases.get("additions", 0.0)
        return self.operations / seconds if seconds and self.operations else None

    @property
    def throttled_share(self) -> float | None:
        """The share of topic-management requests FCM answered 429."""
        return self.throttled / self.topic_requests if self.topic_requests else None

    @property
    def other_seconds(self) -> float | None:
        """Wall time outside the phases: interpreter start, imports, connecting, the
        message's validation, recording the run."""
        return self.wall - sum(self.phases.values()) if self.wall is not None else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["operations"] = self.operations
        data["tokens_per_second"] = self.rate
        data["other_seconds"] = self.other_seconds
        data["phase_tokens_per_second"] = {
            phase: self.phase_rate(phase) for phase in ("removals", "additions")
        }
        return data


# --- audiences ----------------------------------------------------------------------------------


def make_token(rng: random.Random) -> str:
    """160 characters in FCM's shape: 22 of [A-Za-z0-9_-], ':APA91b', 131 more."""
    head = "".join(rng.choices(TOKEN_ALPHABET, k=22))
    tail = "".join(rng.choices(TOKEN_ALPHABET, k=160 - 22 - 7))
    return f"{head}:APA91b{tail}"


def make_audiences(size: int, churn: float, seed: int) -> tuple[list[str], list[str]]:
    """Day 1: `size` distinct tokens. Day 2: day 1 with round(churn * size) of them replaced."""
    rng = random.Random(seed)
    seen: set[str] = set()

    def fresh(count: int) -> list[str]:
        out: list[str] = []
        while len(out) < count:
            token = make_token(rng)
            if token not in seen:
                seen.add(token)
                out.append(token)
        return out

    day1 = fresh(size)
    replaced = round(churn * size)
    leaving = set(rng.sample(range(size), replaced))
    day2 = [token for i, token in enumerate(day1) if i not in leaving] + fresh(replaced)
    rng.shuffle(day2)
    return day1, day2


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# --- processes ----------------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """Our environment without topic-sync settings or credentials, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TOPIC_SYNC_")
        and key not in ("GOOGLE_APPLICATION_CREDENTIALS", "DATABASE_URL", "FCM_EMULATOR_HOST")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_source_root), env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra)
    return env


@dataclass
class Measured:
    rc: int
    wall: float
    cpu: float
    rss_mb: float
    stdout: str
    stderr: str


def measure(cmd: Sequence[str], env: dict[str, str], workdir: Path, timeout: float) -> Measured:
    """Run `cmd` under the MEASURE wrapper (its own process group, killed on timeout)."""
    out, err = workdir / "cmd.stdout", workdir / "cmd.stderr"
    wrapper = subprocess.Popen(
        [sys.executable, "-c", MEASURE, str(out), str(err), *cmd],
        env=env,
        cwd=_source_root,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        said, _ = wrapper.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(wrapper.pid, signal.SIGKILL)
        wrapper.communicate()
        raise TimeoutError(f"timed out after {timeout:g}s: {shlex.join(cmd)}") from None
    except BaseException:  # interrupted: leave no command running behind us
        os.killpg(wrapper.pid, signal.SIGKILL)
        wrapper.wait()
        raise
    if wrapper.returncode != 0:
        raise RuntimeError(f"the measuring wrapper failed (exit {wrapper.returncode})")
    figures = json.loads(said)
    return Measured(
        rc=int(figures["rc"]),
        wall=float(figures["wall"]),
        cpu=float(figures["cpu"]),
        rss_mb=int(figures["maxrss_kb"]) / 1024,
        stdout=out.read_text(errors="replace"),
        stderr=err.read_text(errors="replace"),
    )


def freeze_source(folder: Path) -> dict[str, Any]:
    """Copy topic_sync/, migrations/ and this script into folder/src and run everything from
    there; returns what was copied: git's description, files changed from HEAD, a hash."""
    global _source_root
    root = folder / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "topic_sync", root / "topic_sync", ignore=ignore)
    # Where an installed package has them (pyproject.toml maps migrations/ into it).
    shutil.copytree(REPO_ROOT / "migrations", root / "topic_sync" / "migrations", ignore=ignore)
    shutil.copy2(Path(__file__), root / "bench.py")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    # Byte-compiled as pip compiles an installed package: a command must not pay for
    # compiling every module again when PYTHONDONTWRITEBYTECODE keeps the copy uncached.
    compileall.compile_dir(root, quiet=1)
    _source_root = root
    sys.path.insert(0, str(root))  # this process's own imports (EmbeddedServer) too
    changed = _git("status", "--porcelain", "--", "topic_sync", "migrations").splitlines()
    return {
        "git": _git("describe", "--always", "--dirty") or "unknown",
        "changed_files": len(changed),
        "sha256": digest.hexdigest()[:12],
    }


def cpu_seconds(pid: int, *, tree: bool = False) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), or None. With `tree`,
    its children's too: the live ones, and (cutime, cstime) those it has reaped, such as
    PostgreSQL's backends of connections since closed."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if not tree:
        return ticks / os.sysconf("SC_CLK_TCK")
    ticks += int(fields[13]) + int(fields[14])
    total = ticks / os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        total += cpu_seconds(int(child), tree=True) or 0.0
    return total


def stall_seconds(resource_name: str) -> float | None:
    """Machine-wide seconds some task stalled on `resource_name` ("io", "cpu") so far
    (Linux pressure stall information), or None where the kernel does not tell."""
    try:
        lines = Path(f"/proc/pressure/{resource_name}").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("some "):
            total = dict(part.split("=", 1) for part in line.split()[1:]).get("total")
            return int(total) / 1e6 if total is not None else None
    return None


def _delta(before: float | None, after: float | None) -> float | None:
    return after - before if before is not None and after is not None else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Emulator:
    """`topic-sync emulator` in a process of its own, driven through its control API."""

    def __init__(self, log_path: Path, cpu: int | None = None) -> None:
        self.log_path = log_path
        # On a CPU of its own it stands for an FCM that the client's machine cannot starve.
        pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
        for _ in range(5):  # another process may take the free port before the emulator does
            self.port = free_port()
            with log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "topic_sync.cli", "emulator", "--port", str(self.port)],
                    env=child_env(),
                    cwd=_source_root,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=pin,
                )
            if self._wait_healthy():
                return
        raise RuntimeError(f"the emulator did not start; see {log_path}")

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _wait_healthy(self) -> bool:
        """Poll GET /emulator/health until it answers; False if the process died first."""
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.call("GET", "/emulator/health", timeout=1.0).get("ok") is True:
                    return True
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)  # polling interval, not a stand-in for readiness
        self.stop()
        raise RuntimeError(f"the emulator did not answer its health check; see {self.log_path}")

    def call(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://{self.host_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read() or b"null")

    def reset(self, settings: Settings) -> None:
        """Forget everything, then re-apply latency and quota (0: unlimited) and its shape."""
        self.call("POST", "/emulator/reset", {})
        quota = None
        if settings.quota > 0:
            quota = {
                "rate": settings.quota,
                "window": settings.quota_window,
                "retry_after": settings.retry_after,
                "retry_delay": settings.retry_delay,
            }
        self.call(
            "POST", "/emulator/faults", {"latency": settings.latency_ms / 1000.0, "quota": quota}
        )

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.call("GET", "/emulator/state")
        return state

    def cpu(self) -> float | None:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


BUSY_LOOP = "while True: pass"


class ClientLoad:
    """`count` processes that only burn CPU beside the client (and PostgreSQL): a client
    machine short of CPU, where the moment the pacer lets a request go is not the moment it
    leaves."""

    def __init__(self, count: int) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", BUSY_LOOP],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
            for _ in range(count)
        ]

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def place(emulator_cpu: int | None) -> str:
    """Keep this process and its children (PostgreSQL, every command, the busy loops) off
    the emulator's CPU; what was done, for the report."""
    if emulator_cpu is None:
        return ""
    rest = os.sched_getaffinity(0) - {emulator_cpu}
    os.sched_setaffinity(0, rest)
    return (
        f"emulator on CPU {emulator_cpu}; topic-sync, PostgreSQL and the baselines on "
        f"CPU {','.join(str(c) for c in sorted(rest))}"
    )


class Postgres:
    """The embedded PostgreSQL in a folder of its own, and databases cloned from a template."""

    TEMPLATE = "bench_template"

    def __init__(self, folder: Path) -> None:
        from topic_sync.store.embedded import EmbeddedServer

        self.server = EmbeddedServer(folder / "pg")
        self.url = self.server.url()
        self._configure()
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.TEMPLATE)
        self._admin("CREATE DATABASE {}", self.TEMPLATE)
        done = subprocess.run(
            [sys.executable, "-m", "topic_sync.cli", "db", "upgrade"],
            env=child_env(DATABASE_URL=self.url_of(self.TEMPLATE)),
            cwd=_source_root,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"topic-sync db upgrade failed: {done.stderr.strip()}")

    def _configure(self) -> None:
        """Log slow statements, lock waits and checkpoints (see PG_SETTINGS)."""
        import psycopg
        from psycopg import sql as pgsql

        with psycopg.connect(self.url, autocommit=True) as conn:
            for name, value in PG_SETTINGS.items():
                conn.execute(
                    pgsql.SQL("ALTER SYSTEM SET {} = {}").format(
                        pgsql.Identifier(name), pgsql.Literal(value)
                    )
                )
            conn.execute("SELECT pg_reload_conf()")

    def notable_log(self) -> list[dict[str, Any]]:
        """The server log's slow statements, lock waits and checkpoints: {"at", "text"}."""
        try:
            text = self.server.log.read_text(errors="replace")
        except OSError:
            return []
        starts = list(PG_LOG_RECORD.finditer(text))
        notable: list[dict[str, Any]] = []
        for index, match in enumerate(starts):
            end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
            body = " ".join(text[match.end() : end].split())
            if PG_LOG_NOTABLE.search(body):
                at = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f")
                notable.append({"at": at.replace(tzinfo=dt.UTC).timestamp(), "text": body[:300]})
        return notable

    def url_of(self, name: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def _admin(self, sql: str, name: str) -> None:
        import psycopg
        from psycopg import sql as pgsql

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(pgsql.SQL(sql).format(pgsql.Identifier(name)))

    def fresh(self, name: str) -> str:
        """A new database cloned from the migrated template; returns its URL."""
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
        self._admin(f"CREATE DATABASE {{}} TEMPLATE {self.TEMPLATE}", name)
        return self.url_of(name)

    def cpu(self) -> float | None:
        """CPU seconds of the whole server so far: postmaster, background processes, and
        backends (reaped ones included)."""
        pid = self.server.pid()
        return cpu_seconds(pid, tree=True) if pid is not None else None

    def drop(self, name: str) -> None:
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def stop(self) -> None:
        self.server.stop()


# --- one command, measured and checked -----------------------------------------------------------


def stats_of(state: dict[str, Any]) -> tuple[int, int]:
    """(429 answers, all answers) to topic-management requests so far."""
    stats: dict[str, dict[str, int]] = state.get("stats", {})
    throttled = sum(stats.get(kind, {}).get("429", 0) for kind in TOPIC_KINDS)
    answered = sum(sum(stats.get(kind, {}).values()) for kind in TOPIC_KINDS)
    return throttled, answered


def check_publish(
    result: DayResult, new_publishes: list[dict[str, Any]], audience: set[str], per_device: bool
) -> None:
    """The day's message reached exactly the day's audience, or result.error says how not."""
    if per_device:
        reached = [r for p in new_publishes if p.get("topic") is None for r in p["recipients"]]
        result.recipients = len(reached)
        if len(reached) != len(set(reached)):
            result.error = f"{len(reached) - len(set(reached))} tokens got the message twice"
        elif set(reached) != audience:
            missing, extra = len(audience - set(reached)), len(set(reached) - audience)
            result.error = f"recipients differ from the audience: {missing} missing, {extra} extra"
        return
    to_topic = [p for p in new_publishes if p.get("topic") == TOPIC]
    if len(to_topic) != 1:
        result.error = f"{len(to_topic)} publishes to {TOPIC} instead of 1"
        return
    reached_set = set(to_topic[0]["recipients"])
    result.recipients = len(reached_set)
    if reached_set != audience:
        missing, extra = len(audience - reached_set), len(reached_set - audience)
        result.error = f"recipients differ from the audience: {missing} missing, {extra} extra"


def run_measured(
    result: DayResult,
    cmd: Sequence[str],
    env: dict[str, str],
    emulator: Emulator,
    audience: set[str],
    workdir: Path,
    timeout: float,
    *,
    per_device: bool = False,
    read_counts: Callable[[DayResult, dict[str, Any]], str | None],
    db_cpu: Callable[[], float | None] = lambda: None,
) -> None:
    """Run one command, fill `result` with its figures, and check the day's publish."""
    result.audience = len(audience)
    before = emulator.state()
    cpu_before, db_before = emulator.cpu(), db_cpu()
    io_before, stall_before = stall_seconds("io"), stall_seconds("cpu")
    result.started = time.time()
    try:
        done = measure(cmd, env, workdir, timeout)
    except (TimeoutError, RuntimeError) as error:
        result.error = str(error)
        return
    finally:
        result.ended = time.time()
    cpu_after, db_after = emulator.cpu(), db_cpu()
    result.io_stall = _delta(io_before, stall_seconds("io"))
    result.cpu_stall = _delta(stall_before, stall_seconds("cpu"))
    after = emulator.state()
    result.emulator_cpu = _delta(cpu_before, cpu_after)
    result.db_cpu = _delta(db_before, db_after)
    result.exit_code, result.wall = done.rc, done.wall
    result.cpu, result.rss_mb = done.cpu, done.rss_mb
    (throttled_before, answered_before), (throttled_after, answered_after) = (
        stats_of(before),
        stats_of(after),
    )
    result.throttled = throttled_after - throttled_before
    result.topic_requests = answered_after - answered_before
    lines = done.stdout.strip().splitlines()
    try:
        result.summary = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result.summary = {}
    problem = read_counts(result, result.summary)
    if done.rc != 0 or problem:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        result.error = f"exit {done.rc}: {problem or 'failed'} ({tail})"
        return
    check_publish(result, after["publishes"][len(before["publishes"]) :], audience, per_device)
    result.ok = result.error is None


def topic_sync_counts(result: DayResult, summary: dict[str, Any]) -> str | None:
    result.to_add = int(summary.get("to_add") or 0)
    result.to_remove = int(summary.get("to_remove") or 0)
    result.phases = {k: float(v) for k, v in (summary.get("phases") or {}).items()}
    if summary.get("status") != "published":
        return f"status {summary.get('status')!r}: {summary.get('note') or summary.get('error')}"
    return None


def baseline_counts(result: DayResult, summary: dict[str, Any]) -> str | None:
    result.to_add = int(summary.get("to_add") or 0)
    result.to_remove = int(summary.get("to_remove") or 0)
    result.phases = {k: float(v) for k, v in (summary.get("phases") or {}).items()}
    if summary.get("failed"):
        return f"{summary['failed']} tokens failed: {summary.get('failures')}"
    return None


# --- the benchmark ------------------------------------------------------------------------------


@dataclass
class Settings:
    tokens: int
    churn: float
    latency_ms: float
    quota: float
    quota_window: str  # how the emulator counts its quota: "bucket" or "sliding"
    retry_after: float | None  # a Retry-After header on its 429s
    retry_delay: float | None  # a RetryInfo detail on its 429s
    transports: list[str]
    baselines: list[str]
    runs: int
    seed: int
    rate_limit: str  # what --rate-limit topic-sync gets ("" for its own default)
    per_device_days: int
    timeout: float
    extra_args: list[str]
    smoke: bool
    unpaced: bool = False  # also run each transport with no quota and no pacing
    emulator_cpu: int | None = None  # the one CPU the emulator runs on, the rest on the others
    client_load: int = 0  # busy processes beside the client


UNPACED = "unpaced"  # the subject suffix of a transport run with no quota and no pacing
NO_PACING = "1000000"  # a --rate-limit no command reaches


def unpaced(settings: Settings) -> Settings:
    """The same benchmark with the emulator's quota off and topic-sync not pacing: what this
    machine's client, emulator and database do at most, the ceiling a quota cell is held to."""
    return replace(settings, quota=0.0, rate_limit=NO_PACING)


def subjects_of(settings: Settings) -> list[str]:
    ceilings = [f"topic-sync {t} {UNPACED}" for t in settings.transports if settings.unpaced]
    return (
        [f"topic-sync {t}" for t in settings.transports]
        + ceilings
        + [f"{b} baseline" if b == "per-device" else b for b in settings.baselines]
    )


def run_benchmark(
    settings: Settings, folder: Path, log: Callable[[str], None]
) -> tuple[list[DayResult], list[dict[str, Any]]]:
    """Every subject's runs; and PostgreSQL's notable log records (see Postgres.notable_log)."""
    day1, day2 = make_audiences(settings.tokens, settings.churn, settings.seed)
    audiences = (day1, day2)
    files = (
        write_lines(folder / "day1.txt", day1),
        write_lines(folder / "day2.txt", day2),
    )
    message = folder / "message.json"
    message.write_text(
        json.dumps({"notification": {"title": "Bench {date}", "body": "Your picks are ready"}})
    )
    workdir = folder / "work"
    workdir.mkdir()
    log(f"audiences: {len(day1)} and {len(day2)} tokens in {folder}")
    log("starting PostgreSQL and the emulator")
    results: list[DayResult] = []
    pg_log: list[dict[str, Any]] = []
    pg = Postgres(folder)
    emulator: Emulator | None = None
    load = ClientLoad(settings.client_load)
    try:
        emulator = Emulator(folder / "emulator.log", settings.emulator_cpu)
        for run in range(1, settings.runs + 1):
            for transport in settings.transports:
                results += _topic_sync_run(
                    settings, transport, run, pg, emulator, files, audiences, message, workdir, log
                )
                if settings.unpaced:
                    results += _topic_sync_run(
                        unpaced(settings),
                        transport,
                        run,
                        pg,
                        emulator,
                        files,
                        audiences,
                        message,
                        workdir,
                        log,
                        subject=f"topic-sync {transport} {UNPACED}",
                    )
            for baseline in settings.baselines:
                results += _baseline_run(
                    settings, baseline, run, emulator, files, audiences, workdir, log
                )
    finally:
        load.stop()
        if emulator is not None:
            emulator.stop()
        pg_log = pg.notable_log()
        pg.stop()
    return results, pg_log


def _report(result: DayResult, log: Callable[[str], None]) -> None:
    how = "ok" if result.ok else f"ERROR: {result.error}"
    wall = f"{result.wall:.2f}s" if result.wall is not None else "-"
    log(f"  {result.subject} run {result.run} day {result.day}: {wall}, {how}")


def _topic_sync_run(
    settings: Settings,
    transport: str,
    run: int,
    pg: Postgres,
    emulator: Emulator,
    files: tuple[Path, Path],
    audiences: tuple[list[str], list[str]],
    message: Path,
    workdir: Path,
    log: Callable[[str], None],
    *,
    subject: str | None = None,
) -> list[DayResult]:
    subject = subject or f"topic-sync {transport}"
    name = f"bench_{subject.split(' ', 1)[1].replace('-', '_').replace(' ', '_')}_{run}"
    url = pg.fresh(name)
    emulator.reset(settings)
    env = child_env(
        DATABASE_URL=url, FCM_EMULATOR_HOST=emulator.host_port, GOOGLE_CLOUD_PROJECT=PROJECT
    )
    out: list[DayResult] = []
    try:
        for index, (day, audience_file) in enumerate(zip(DAYS, files, strict=True)):
            result = DayResult(subject, run, index + 1)
            cmd = [
                sys.executable,
                "-m",
                "topic_sync.cli",
                "run",
                "--date",
                day.isoformat(),
                "--audience",
                str(audience_file),
                "--message",
                str(message),
                "--live",
                "--json",
                "--propagation-delay",
                "0",
                "--backfill",
                "--transport",
                transport,
                "--pool-size",
                "1",
                "--pool-policy",  # one topic, two days back to back: no rest period
                "ordinal",
                "--topic-prefix",
                PREFIX,
                "--max-churn",
                "1",
                *(["--rate-limit", settings.rate_limit] if settings.rate_limit else []),
                *settings.extra_args,
            ]
            run_measured(
                result,
                cmd,
                env,
                emulator,
                set(audiences[index]),
                workdir,
                settings.timeout,
                read_counts=topic_sync_counts,
                db_cpu=pg.cpu,
            )
            out.append(result)
            _report(result, log)
            if not result.ok:
                break  # day 2 means nothing after a failed day 1
    finally:
        pg.drop(name)
    return out


def _baseline_run(
    settings: Settings,
    baseline: str,
    run: int,
    emulator: Emulator,
    files: tuple[Path, Path],
    audiences: tuple[list[str], list[str]],
    workdir: Path,
    log: Callable[[str], None],
) -> list[DayResult]:
    emulator.reset(settings)
    env = child_env()
    per_device = baseline == "per-device"
    days = settings.per_device_days if per_device else 2
    subject = f"{baseline} baseline" if per_device else baseline
    out: list[DayResult] = []
    for index in range(days):
        result = DayResult(subject, run, index + 1)
        cmd = [
            sys.executable,
            str(_source_root / "bench.py"),
            "_baseline",
            baseline,
            "--audience",
            str(files[index]),
            "--previous",
            str(files[index - 1]) if index else "",
            "--emulator-host",
            emulator.host_port,
            "--topic",
            TOPIC,
        ]
        run_measured(
            result,
            cmd,
            env,
            emulator,
            set(audiences[index]),
            workdir,
            settings.timeout,
            per_device=per_device,
            read_counts=baseline_counts,
        )
        out.append(result)
        _report(result, log)
        if not result.ok:
            break
    return out


# --- the baselines, each run as `bench.py _baseline KIND ...` in a process of its own -----------


def baseline_main(argv: Sequence[str]) -> int:
    """One day of a baseline; prints one JSON object (counts, phases, failures)."""
    parser = argparse.ArgumentParser(prog="bench.py _baseline")
    parser.add_argument("kind", choices=BASELINES)
    parser.add_argument("--audience", type=Path, required=True)
    parser.add_argument("--previous", default="")
    parser.add_argument("--emulator-host", required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args(argv)

    import warnings

    warnings.simplefilter("ignore")  # the legacy calls are deprecated, and say so
    from firebase_admin import exceptions, messaging

    from topic_sync.fcm.sdk_bridge import initialize_app, messaging_service

    app = initialize_app(
        name="bench-baseline", project_id=PROJECT, emulator_host=args.emulator_host
    )
    # The loop a team writes gets the messaging service as the SDK builds it, asynchronous
    # client included: topic-sync defers that client (sdk_bridge.DeferredAsyncClient), the
    # loops it is measured against do not.
    messaging_service(app)._async_client.base_url  # noqa: B018
    notification = messaging.Notification(title="Bench", body="Your picks are ready")
    phases: dict[str, float] = {}
    failures: dict[str, int] = {}

    start = time.perf_counter()
    today = read_lines(args.audience)
    previous = read_lines(Path(args.previous)) if args.previous else []
    phases["load"] = time.perf_counter() - start

    if args.kind == "per-device":

        def send_one(token: str) -> str | None:
            try:
                messaging.send(messaging.Message(token=token, notification=notification), app=app)
            except exceptions.FirebaseError as error:
                return str(error.code)
            return None

        phases["plan"] = 0.0
        start = time.perf_counter()
        with ThreadPoolExecutor(PER_DEVICE_IN_FLIGHT) as pool:
            for code in pool.map(send_one, today):
                if code is not None:
                    failures[code] = failures.get(code, 0) + 1
        phases["publish"] = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "to_add": len(today),
                    "to_remove": 0,
                    "phases": phases,
                    "failed": sum(failures.values()),
                    "failures": failures,
                }
            )
        )
        return 0

    start = time.perf_counter()
    today_set, previous_set = set(today), set(previous)
    to_add = [t for t in today if t not in previous_set]
    to_remove = [t for t in previous if t not in today_set]
    phases["plan"] = time.perf_counter() - start

    if args.kind == "v1-loop":
        subscribe, unsubscribe = messaging.subscribe_to_topic, messaging.unsubscribe_from_topic
    else:
        subscribe = messaging.subscribe_to_topic_legacy
        unsubscribe = messaging.unsubscribe_from_topic_legacy
    retries = 0

    def manage(call: Callable[..., Any], tokens: list[str]) -> None:
        """Chunks of 1000, serially; a chunk's retryable failures are resent a few times."""
        nonlocal retries
        for at in range(0, len(tokens), CHUNK):
            pending = tokens[at : at + CHUNK]
            for attempt in range(LOOP_ATTEMPTS):
                if attempt:
                    retries += len(pending)
                    time.sleep(LOOP_BACKOFF_SECONDS)  # a retry's backoff
                try:
                    answer = call(pending, args.topic, app=app)
                except exceptions.FirebaseError as error:  # the whole request failed
                    code = str(error.code).upper()
                    if attempt + 1 == LOOP_ATTEMPTS:
                        failures[code] = failures.get(code, 0) + len(pending)
                    continue
                retry: list[str] = []
                for info in answer.errors:
                    if str(info.reason).upper() in RETRYABLE and attempt + 1 < LOOP_ATTEMPTS:
                        retry.append(pending[info.index])
                    else:
                        failures[info.reason] = failures.get(info.reason, 0) + 1
                pending = retry
                if not pending:
                    break

    start = time.perf_counter()
    manage(unsubscribe, to_remove)
    phases["removals"] = time.perf_counter() - start
    start = time.perf_counter()
    manage(subscribe, to_add)
    phases["additions"] = time.perf_counter() - start
    start = time.perf_counter()
    messaging.send(messaging.Message(topic=args.topic, notification=notification), app=app)
    phases["publish"] = time.perf_counter() - start
    print(
        json.dumps(
            {
                "to_add": len(to_add),
                "to_remove": len(to_remove),
                "phases": phases,
                "retries": retries,
                "failed": sum(failures.values()),
                "failures": failures,
            }
        )
    )
    return 0


# --- tables -------------------------------------------------------------------------------------


def _digits(value: float) -> int:
    magnitude = abs(value)
    return 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 0.1 else 3


def spread(values: Sequence[float | None], *, integer: bool = False) -> str:
    """'median (min–max)' of the values present; '–' if none."""
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    median = statistics.median(present)
    d = 0 if integer else _digits(median)
    if len(present) == 1 or min(present) == max(present):
        return f"{median:,.{d}f}"
    return f"{median:,.{d}f} ({min(present):,.{d}f}–{max(present):,.{d}f})"


def median_of(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(mine: float | None, theirs: float | None) -> str:
    if mine is None or not theirs:
        return "–"
    return f"×{mine / theirs:.2f}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [
        line(header),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        *(line(r) for r in rows),
    ]


def summarise(settings: Settings, results: list[DayResult]) -> dict[str, Any]:
    """Per subject and day: medians, spreads and the ratios to the two loops."""
    by_key: dict[tuple[str, int], list[DayResult]] = {}
    for result in results:
        by_key.setdefault((result.subject, result.day), []).append(result)

    def good(subject: str, day: int) -> list[DayResult]:
        return [r for r in by_key.get((subject, day), []) if r.ok]

    def median_rate(subject: str, day: int) -> float | None:
        return median_of([r.rate for r in good(subject, day)])

    def allowed(subject: str, day: int) -> float | None:
        """What a quota cell could hold at most: the quota, or less if this machine's
        unpaced run of the same transport (same invocation) synced fewer tokens a second."""
        if not settings.quota or subject.endswith(UNPACED):
            return None
        ceiling = median_of([r.sync_rate for r in good(f"{subject} {UNPACED}", day)])
        return min(settings.quota, ceiling) if ceiling else settings.quota

    rows: list[dict[str, Any]] = []
    for subject in subjects_of(settings):
        for day in (1, 2):
            attempted = by_key.get((subject, day), [])
            if not attempted:
                continue
            ok = good(subject, day)
            rate = median_rate(subject, day)
            most = allowed(subject, day)
            rows.append(
                {
                    "subject": subject,
                    "day": day,
                    "correct": f"{len(ok)}/{len(attempted)}",
                    "operations": spread([float(r.operations) for r in ok], integer=True),
                    "wall": spread([r.wall for r in ok]),
                    "rate": spread([r.rate for r in ok]),
                    "vs_v1_loop": _ratio(rate, median_rate("v1-loop", day)),
                    "vs_legacy_loop": _ratio(rate, median_rate("legacy-loop", day)),
                    "throttled": spread([float(r.throttled) for r in ok], integer=True),
                    "rss_mb": spread([r.rss_mb for r in ok]),
                    "cpu": spread([r.cpu for r in ok]),
                    "emulator_cpu": spread([r.emulator_cpu for r in ok]),
                    "db_cpu": spread([r.db_cpu for r in ok]),
                    "phases": {
                        phase: spread([r.phases.get(phase) for r in ok]) for phase in PHASES
                    },
                    "other": spread([r.other_seconds for r in ok]),
                    "phase_rates": {
                        phase: spread([r.phase_rate(phase) for r in ok])
                        for phase in ("removals", "additions")
                    },
                    "median_rate": rate,
                    "sync_rate": spread([r.sync_rate for r in ok]),
                    "held": spread(
                        [
                            100 * r.sync_rate / settings.quota
                            if r.sync_rate and most is not None
                            else None
                            for r in ok
                        ]
                    ),
                    "allowed": most,
                    "held_of_allowed": spread(
                        [100 * r.sync_rate / most if r.sync_rate and most else None for r in ok]
                    ),
                    "throttled_share": spread(
                        [
                            100 * r.throttled_share if r.throttled_share is not None else None
                            for r in ok
                        ]
                    ),
                }
            )
    return {"rows": rows}


def attribute(pg_log: list[dict[str, Any]], results: list[DayResult]) -> list[dict[str, Any]]:
    """Each log record with the command it happened in ("" if none was running)."""
    out = []
    for record in pg_log:
        during = [
            f"{r.subject} run {r.run} day {r.day}"
            for r in results
            if r.started is not None
            and r.ended is not None
            and r.started <= record["at"] <= r.ended
        ]
        out.append({**record, "command": during[0] if during else ""})
    return out


def _pg_lines(pg_log: list[dict[str, Any]]) -> list[str]:
    """Slowest statements first, then lock waits, then a line about checkpoints."""
    slow = []
    for record in pg_log:
        found = re.search(r"duration: ([\d.]+) ms", record["text"])
        if found:
            slow.append((float(found.group(1)), record))
    slow.sort(key=lambda item: -item[0])
    lines = [
        f"- {ms / 1000:,.1f} s in {record['command'] or 'no command'}: "
        f"`{record['text'].split(': ', 2)[-1][:140]}`"
        for ms, record in slow[:15]
    ]
    if len(slow) > 15:
        lines.append(f"- ... {len(slow) - 15} more (all in --json)")
    waits = [r for r in pg_log if "still waiting" in r["text"] or "acquired" in r["text"]]
    lines += [
        f"- lock wait in {r['command'] or 'no command'}: {r['text'][:160]}" for r in waits[:5]
    ]
    checkpoints = [r for r in pg_log if "checkpoint complete" in r["text"]]
    if checkpoints:
        totals = [
            float(m.group(1))
            for r in checkpoints
            if (m := re.search(r"total=([\d.]+) s", r["text"])) is not None
        ]
        longest = f", the longest took {max(totals):.1f} s" if totals else ""
        lines.append(f"- {len(checkpoints)} checkpoint(s){longest}")
    return lines


def placement(settings: Settings, env: dict[str, Any]) -> list[str]:
    """The report's line on where the processes ran, when the benchmark chose it."""
    where = [env["placement"]] if env.get("placement") else []
    if settings.client_load:
        where.append(f"{settings.client_load} busy process(es) beside the client")
    return [f"- placement: {'; '.join(where)}"] if where else []


def render(
    settings: Settings,
    results: list[DayResult],
    summary: dict[str, Any],
    env: dict[str, Any],
    pg_log: list[dict[str, Any]],
) -> list[str]:
    rows = summary["rows"]
    source = env["source"]
    replaced = round(settings.churn * settings.tokens)
    quota = "unlimited"
    if settings.quota > 0:
        hints = [
            f"Retry-After: {settings.retry_after:g}" if settings.retry_after is not None else "",
            f"RetryInfo {settings.retry_delay:g}s" if settings.retry_delay is not None else "",
        ]
        carry = " and ".join(h for h in hints if h) or "no hint"
        window = "token bucket" if settings.quota_window == "bucket" else "sliding window"
        quota = f"{settings.quota:g} requests/s ({window}; its 429s carry {carry})"
    rate_limit = settings.rate_limit or "topic-sync's default"
    lines = [
        "## topic-sync benchmark",
        "",
        f"- command: `{env['command']}`",
        f"- machine: {env['cpus']} CPUs, {env['platform']}, Python {env['python']}",
        f"- topic-sync: a copy of the checkout taken at the start: git {source['git']}, "
        f"{source['changed_files']} file(s) of topic_sync/ and migrations/ differing from "
        f"HEAD, content sha256 {source['sha256']}",
        f"- run at {env['started']}; load average {env['load_start']} at the start, "
        f"{env.get('load_end', '?')} at the end",
        f"- audience: day 1 {settings.tokens:,} tokens; day 2 replaces {replaced:,} "
        f"(churn {settings.churn:g}: {replaced:,} removals + {replaced:,} additions); "
        f"seed {settings.seed}",
        f"- emulator: latency {settings.latency_ms:g} ms per request, quota {quota}; "
        f"topic-sync --rate-limit {rate_limit}"
        + (f", extra arguments `{shlex.join(settings.extra_args)}`" if settings.extra_args else ""),
        *placement(settings, env),
        f"- {settings.runs} run(s) per subject, round-robin; figures are median (min–max) over "
        "the correct runs",
        "",
        "### Throughput",
        "",
    ]
    lines += markdown(
        [
            "subject",
            "day",
            "ops",
            "wall s",
            "tokens/s",
            "vs v1 loop",
            "vs legacy loop",
            "429s",
            "peak RSS MB",
            "CPU s",
            "emulator CPU s",
            "db CPU s",
            "correct",
        ],
        [
            [
                r["subject"],
                str(r["day"]),
                r["operations"],
                r["wall"],
                r["rate"],
                r["vs_v1_loop"],
                r["vs_legacy_loop"],
                r["throttled"],
                r["rss_mb"],
                r["cpu"],
                r["emulator_cpu"],
                r["db_cpu"],
                r["correct"],
            ]
            for r in rows
        ],
    )
    lines += [
        "",
        "### Phases (seconds, and tokens/s for removals and additions; other = wall minus phases)",
        "",
    ]
    lines += markdown(
        [
            "subject",
            "day",
            "load s",
            "plan s",
            "removals s",
            "removals tokens/s",
            "additions s",
            "additions tokens/s",
            "publish s",
            "other s",
        ],
        [
            [
                r["subject"],
                str(r["day"]),
                r["phases"]["load"],
                r["phases"]["plan"],
                r["phases"]["removals"],
                r["phase_rates"]["removals"],
                r["phases"]["additions"],
                r["phase_rates"]["additions"],
                r["phases"]["publish"],
                r["other"],
            ]
            for r in rows
        ],
    )
    if settings.quota > 0:
        lines += [
            "",
            "### Riding the quota (sync: the removals and additions phases together)",
            "",
        ]
        lines += markdown(
            [
                "subject",
                "day",
                "sync tokens/s",
                "% of the quota",
                "most it could hold",
                "% of that",
                "429s",
                "% of requests 429",
            ],
            [
                [
                    r["subject"],
                    str(r["day"]),
                    r["sync_rate"],
                    r["held"],
                    f"{r['allowed']:,.0f}" if r["allowed"] else "–",
                    r["held_of_allowed"],
                    r["throttled"],
                    r["throttled_share"],
                ]
                for r in rows
            ],
        )
    pg_lines = _pg_lines(pg_log)
    if pg_lines:
        lines += [
            "",
            f"### PostgreSQL: statements over {SLOW_STATEMENT_MS / 1000:g} s, lock waits, "
            "checkpoints",
            "",
            *pg_lines,
        ]
    errors = [r for r in results if not r.ok]
    if errors:
        lines += ["", "### Errors", ""]
        lines += [f"- {r.subject} run {r.run} day {r.day}: {r.error}" for r in errors]
    return lines


# --- main ---------------------------------------------------------------------------------------


def _git(*args: str) -> str:
    """The output of a read-only git command in the checkout ("" if git is unavailable)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip()


def _load() -> str:
    """The 1, 5 and 15-minute load averages (others' work on a shared machine shows here)."""
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _names(value: str, allowed: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip() and n.strip() != "none"]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {what} {bad}; choose from {list(allowed)}")
    return names


def parse_settings(argv: Sequence[str]) -> tuple[Settings, Path | None]:
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark topic-sync's transports against firebase-admin loops, on the "
        "local FCM emulator and a private PostgreSQL. See bench/README.md.",
    )
    parser.add_argument("--tokens", type=int, help="day 1's audience (default 50000; smoke 10000)")
    parser.add_argument("--churn", type=float, default=0.2, help="share replaced on day 2")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="emulator latency")
    parser.add_argument("--quota", type=float, default=0.0, help="emulator quota/s, 0: none")
    parser.add_argument(
        "--quota-window",
        choices=("bucket", "sliding"),
        default="bucket",
        help="how the emulator counts its quota: a token bucket (a second's burst, then the "
        "rate) or a sliding one-second window",
    )
    parser.add_argument(
        "--retry-after", type=float, help="seconds of Retry-After on the quota's 429s (none)"
    )
    parser.add_argument(
        "--retry-delay", type=float, help="seconds of RetryInfo detail on the quota's 429s (none)"
    )
    parser.add_argument(
        "--transport",
        help=f"topic-sync transports, comma-separated (default: all of {','.join(TRANSPORTS)})",
    )
    parser.add_argument(
        "--baselines",
        help=f"baselines, comma-separated, or none (default: {','.join(BASELINES)})",
    )
    parser.add_argument("--runs", type=int, help="runs per subject (default 3; smoke 1)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the audiences")
    parser.add_argument(
        "--rate-limit",
        default="auto",
        help="topic-sync's --rate-limit: a number, 'default' (topic-sync's own, 3000/s) or "
        "'auto' (the emulator's quota, or 1000000, i.e. no pacing, when there is none)",
    )
    parser.add_argument(
        "--per-device-days",
        type=int,
        choices=(1, 2),
        default=1,
        help="days the per-device baseline runs (day 2 resends to the whole day-2 audience)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per command")
    parser.add_argument(
        "--ts-args", default="", help="extra arguments for every `topic-sync run` (quoted)"
    )
    parser.add_argument(
        "--unpaced",
        action="store_true",
        help="also run each transport with no quota and no pacing, in the same invocation: "
        "a quota cell's held share is then also given of the most this machine syncs",
    )
    parser.add_argument(
        "--emulator-cpu",
        type=int,
        help="run the emulator on this CPU alone and everything else on the others (Linux): "
        "a real FCM is not short of CPU when the client's machine is",
    )
    parser.add_argument(
        "--client-load",
        type=int,
        default=0,
        help="this many busy processes beside the client and PostgreSQL (default 0): a "
        "client machine short of CPU",
    )
    parser.add_argument("--json", type=Path, help="write every raw figure to this file")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"CI mode: {SMOKE_TOKENS} tokens, 1 run, topic-sync {DEFAULT_TRANSPORT} and the "
        "v1 loop; exit non-zero on any failed or incorrect day",
    )
    args = parser.parse_args(argv)
    try:
        transports = _names(
            args.transport or (DEFAULT_TRANSPORT if args.smoke else ",".join(TRANSPORTS)),
            TRANSPORTS,
            "transport",
        )
        baselines = _names(
            args.baselines
            if args.baselines is not None
            else ("v1-loop" if args.smoke else ",".join(BASELINES)),
            BASELINES,
            "baseline",
        )
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    tokens = args.tokens or (SMOKE_TOKENS if args.smoke else 50_000)
    runs = args.runs or (1 if args.smoke else 3)
    if tokens < 1 or runs < 1:
        parser.error("--tokens and --runs must be at least 1")
    if not 0 <= args.churn <= 1:
        parser.error("--churn must be between 0 and 1")
    if args.latency_ms < 0 or args.quota < 0:
        parser.error("--latency-ms and --quota must not be negative")
    if args.client_load < 0:
        parser.error("--client-load must not be negative")
    if args.emulator_cpu is not None:
        cpus = os.sched_getaffinity(0)
        if args.emulator_cpu not in cpus or len(cpus) < 2:
            parser.error(
                f"--emulator-cpu {args.emulator_cpu}: not one of this process's CPUs "
                f"{sorted(cpus)}, or no other CPU would be left"
            )
    if args.rate_limit == "auto":
        rate_limit = f"{args.quota:g}" if args.quota > 0 else "1000000"
    elif args.rate_limit == "default":
        rate_limit = ""
    else:
        try:
            rate_limit = f"{float(args.rate_limit):g}"
        except ValueError:
            parser.error("--rate-limit takes a number, 'auto' or 'default'")
    settings = Settings(
        tokens=tokens,
        churn=args.churn,
        latency_ms=args.latency_ms,
        quota=args.quota,
        quota_window=args.quota_window,
        retry_after=args.retry_after,
        retry_delay=args.retry_delay,
        transports=transports,
        baselines=baselines,
        runs=runs,
        seed=args.seed,
        rate_limit=rate_limit,
        per_device_days=args.per_device_days,
        timeout=args.timeout,
        extra_args=shlex.split(args.ts_args),
        smoke=args.smoke,
        unpaced=args.unpaced,
        emulator_cpu=args.emulator_cpu,
        client_load=args.client_load,
    )
    return settings, args.json


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks stop PostgreSQL and the emulator


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["_baseline"]:
        return baseline_main(argv[1:])
    settings, json_path = parse_settings(argv)
    signal.signal(signal.SIGTERM, _terminate)
    env: dict[str, Any] = {
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": _load(),
        "placement": place(settings.emulator_cpu),
    }

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    # As root, the embedded server's user must traverse the folder's parent: 0755.
    folder = Path(tempfile.mkdtemp(prefix="topic-sync-bench-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        env["source"] = freeze_source(folder)
        results, raw_log = run_benchmark(settings, folder, log)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    env["load_end"] = _load()
    pg_log = attribute(raw_log, results)
    summary = summarise(settings, results)
    print("\n".join(render(settings, results, summary, env, pg_log)), flush=True)
    if json_path is not None:
        json_path.write_text(
            json.dumps(
                {
                    "environment": env,
                    "settings": asdict(settings),
                    "results": [r.to_json() for r in results],
                    "summary": summary,
                    "postgres_log": pg_log,
                },
                indent=2,
            )
        )
    expected = sum(
        (settings.per_device_days if s == "per-device baseline" else 2) * settings.runs
        for s in subjects_of(settings)
    )
    failed = [r for r in results if not r.ok]
    if failed or len(results) != expected:
        log(f"FAILED: {len(failed)} incorrect or failed day(s) of {expected}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
