"""Everything the CLI shows: text for people on stderr, JSON for machines on stdout, and
the one place where an error becomes a message and an exit code.

Every line for stderr goes through `LOG`: as text (the default), or with `--log-format json`
as one JSON object per event and line, each with the time, level, event, this command's
run id, command and campaign (and the topic once known).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from topic_sync.app.report import RunResult, describe_run, duration_text
from topic_sync.app.services import Io
from topic_sync.dates import format_duration
from topic_sync.engine.reconcile import ReconcileResult
from topic_sync.engine.types import Progress
from topic_sync.errors import ExitCode, TopicSyncError
from topic_sync.redact import shorten
from topic_sync.states import Op

F = TypeVar("F", bound=Callable[..., Any])


class Log:
    """Where stderr output goes: lines for people, or one JSON object per event."""

    def __init__(self) -> None:
        self.begin()

    def begin(self) -> None:
        """A new command: lines for people until configured, and a new id (one process may
        run several commands: the tests run them in theirs)."""
        self.json = False
        # One id per command: every line of one invocation carries it.
        self.context: dict[str, Any] = {"run_id": uuid.uuid4().hex[:12]}

    def configure(self, log_format: str, **context: Any) -> None:
        self.json = log_format == "json"
        self.context.update({k: v for k, v in context.items() if v is not None})

    def event(
        self, event: str, message: str | None = None, level: str = "info", **fields: Any
    ) -> None:
        if not self.json:
            if message is not None:
                click.echo(message, err=True)
            return
        document: dict[str, Any] = {
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "event": event,
            **self.context,
            **fields,
        }
        if message is not None:
            document["message"] = message
        click.echo(json.dumps(document, default=str), err=True)


LOG = Log()


def say(message: str) -> None:
    """Output for people goes to stderr; stdout is kept for --json."""
    level = "warning" if message.startswith(("WARNING", "warning", "note:")) else "info"
    LOG.event("log", message, level)


def use_log_format(
    log_format: str, command: str, campaign: str | None, topic: str | None = None
) -> None:
    """Set the stderr format and what every JSON line says about the command."""
    LOG.configure(log_format, command=command, campaign=campaign, topic=topic)


def log_topic(topic: str) -> None:
    """From now on every JSON line names the topic (a run's, once chosen)."""
    LOG.context["topic"] = topic


def emit_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, sort_keys=True))


JSON_VERSION = 1
"""The version of every command's --json document; new keys may come, existing ones keep
their meaning until it changes."""


def emit_result(kind: str, document: dict[str, Any]) -> None:
    """A command's --json result: what it did, named by `kind`, in a versioned document."""
    emit_json({"version": JSON_VERSION, "kind": kind, **document})


def finish(code: ExitCode) -> NoReturn:
    sys.exit(int(code))


def error_document(code: ExitCode, message: str) -> dict[str, Any]:
    return {"status": "error", "exit_code": int(code), "kind": code.name.lower(), "error": message}


def debugging() -> bool:
    """Whether --debug (TOPIC_SYNC_DEBUG) asked for tracebacks."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("debug"))


def errors_to_exit(func: F) -> F:
    """The one place where an error becomes output and an exit code.

    topic-sync's own errors carry their message and code. Anything else is a bug or an
    environment topic-sync did not foresee: exit 1 with one line, the traceback only with
    --debug. With --json, stdout gets exactly one JSON object either way.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("as_json", False)
        try:
            return func(*args, **kwargs)
        except TopicSyncError as error:
            code, message = error.exit_code, error.message
        except Exception as error:
            if debugging():
                raise
            code = ExitCode.FAILED
            message = (
                f"unexpected error: {type(error).__name__}: {error} "
                "(rerun with --debug for the traceback)"
            )
        if as_json:
            emit_json(error_document(code, message))
        LOG.event("error", f"topic-sync: {message}", "error", exit_code=int(code))
        finish(code)

    return wrapper  # type: ignore[return-value]


PHASE_OF = {Op.UNSUBSCRIBE: "removals", Op.SUBSCRIBE: "additions"}


class ProgressLine:
    """Progress for people: a live line on a terminal, a log line now and then in cron."""

    def __init__(
        self, *, tty: bool, every: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.tty, self.every, self.clock = tty, every, clock
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, p: Progress) -> None:
        now = self.clock()
        finished = p.done >= p.total
        with self._lock:
            if not finished and now - self._last < (0.2 if self.tty else self.every):
                return
            self._last = now
            elapsed = max(now - p.started, 1e-6)
            rate = p.done / elapsed
            eta = (p.total - p.done) / rate if rate > 0 and not finished else 0.0
            pct = 100.0 * p.done / p.total if p.total else 100.0
            line = (
                f"{p.op}: {p.done}/{p.total} ({pct:.0f}%) {rate:.0f} tokens/s "
                f"ETA {eta:.0f}s, {p.failed} failed"
            )
            if LOG.json:
                LOG.event(
                    "progress",
                    line,
                    phase=PHASE_OF[p.op],
                    op=str(p.op),
                    done=p.done,
                    total=p.total,
                    failed=p.failed,
                    tokens_per_second=round(rate, 1),
                    eta_seconds=round(eta, 1),
                    elapsed_seconds=round(elapsed, 3),
                )
            elif self.tty:
                click.echo("\r" + line.ljust(78) + ("\n" if finished else ""), err=True, nl=False)
            else:
                say(line)


def cli_io(**overrides: Any) -> Io:
    """The Io of a command run from the command line: stderr, the process environment."""
    values: dict[str, Any] = {
        "log": say,
        "environ": os.environ,
        "progress": ProgressLine(tty=sys.stderr.isatty()),
        "stdin": sys.stdin.buffer,
    }
    values.update(overrides)
    return Io(**values)


def show_run(result: RunResult) -> None:
    """The run's outcome on stderr: text for people, or one `run finished` event (its
    fields: the run's JSON summary; "date" is the run's date, the event has its own ts)."""
    fields = result.summary()
    fields["duration_seconds"] = round(result.duration_seconds, 3)
    LOG.event("run finished", describe_run(result), "info", **fields)


def show_reconcile(result: ReconcileResult, *, full_tokens: bool = False) -> None:
    text = describe_reconcile(result, full_tokens=full_tokens)
    LOG.event("reconcile finished", text, "info", **result.summary())


def describe_simulation(summary: dict[str, Any]) -> str:
    """simulate's table: a row per day, a column group per policy, then the totals."""
    s = summary
    policies = list(s["totals"])
    names = {"cost": "cost policy", "ordinal": "ordinal rule"}
    width = max([len(d[p]["topic"]) for d in s["days"] for p in policies] + [5])
    group = f"{{:<{width}}}  {{:>10}} {{:>10}} {{:>11}} {{:>8}}"
    head = f"{'':<10}  {'':>10}"
    cols = f"{'date':<10}  {'audience':>10}"
    for policy in policies:
        title = names.get(policy, policy)
        head += "  |  " + title.center(len(group.format("", "", "", "", "")))
        cols += "  |  " + group.format("topic", "added", "removed", "operations", "time")
    lines = [
        f"pool of {s['pool_size']} ({s['prefix']}-0..{s['pool_size'] - 1}), rest "
        f"{format_duration(s['rest_seconds'])}, quota {s['quota']:,g} requests/s; "
        f"{len(s['days'])} days",
        head,
        cols,
    ]
    for day in s["days"]:
        row = f"{day['date']:<10}  {day['audience']:>10,}"
        for policy in policies:
            c = day[policy]
            row += "  |  " + group.format(
                c["topic"],
                f"{c['to_add']:,}",
                f"{c['to_remove']:,}",
                f"{c['operations']:,}",
                duration_text(c["seconds"]),
            )
        lines.append(row)
    total = f"{'total':<10}  {'':>10}"
    for policy in policies:
        t = s["totals"][policy]
        total += "  |  " + group.format(
            "", "", "", f"{t['operations']:,}", duration_text(t["seconds"])
        )
    lines.append(total)
    chosen = s["totals"][s["policy"]]
    verdict = f"{names.get(s['policy'], s['policy'])}: {chosen['operations']:,} operations"
    verdict += f" ({duration_text(chosen['seconds'])} at the quota)"
    if s["policy"] != "ordinal" and s["ratio"] is not None:
        ordinal = s["totals"]["ordinal"]
        verdict += (
            f", {s['ratio']:.2f}x the ordinal rule's {ordinal['operations']:,} "
            f"({duration_text(ordinal['seconds'])})"
        )
    lines.append(verdict)
    return "\n".join(lines)


_MARKS = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}


def describe_doctor(summary: dict[str, Any]) -> str:
    """The checklist: one line per check, and under each failure or warning its fix."""
    width = max(len(c["name"]) for c in summary["checks"])
    lines = []
    for check in summary["checks"]:
        mark = _MARKS[check["status"]]
        lines.append(f"{mark:<4}  {check['name']:<{width}}  {check['detail']}")
        if check["fix"]:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {check['fix']}")
    counts = {mark: 0 for mark in _MARKS.values()}
    for check in summary["checks"]:
        counts[_MARKS[check["status"]]] += 1
    tally = ", ".join(f"{n} {mark}" for mark, n in counts.items() if n)
    verdict = "ready" if summary["ready"] else f"NOT ready (exit {summary['exit_code']})"
    day = f" for {summary['date']}" if summary["date"] else ""
    lines.append(f"doctor{day}: {tally}: {verdict}")
    return "\n".join(lines)


def describe_reconcile(result: ReconcileResult, *, full_tokens: bool = False) -> str:
    mode = "live" if result.live else "dry run (pass --live to apply)"
    lines = [f"reconcile, {mode}:"]
    for t in result.topics:
        line = (
            f"  {t.topic}: owed {t.owed_remove} removals, {t.owed_add} additions; "
            f"{t.stale} invalid/forgotten members"
        )
        if t.full_add or t.full_remove:
            line += f"; --full re-asserts {t.full_add} members, {t.full_remove} removals"
        if result.live:
            line += f" -> removed {t.removed}, added {t.added}; still owed "
            line += f"{t.left_remove} removals, {t.left_add} additions"
        lines.append(line)
    if result.audited:
        lines.append(
            f"  audit: {result.audited} tokens; in FCM but not in the table: "
            f"{result.drift_in_fcm}; in the table but not in FCM: {result.drift_missing}; "
            f"unknown to FCM: {result.unknown_tokens}"
        )
        for d in result.drift:
            where = "FCM holds, table does not" if d.in_fcm else "table holds, FCM does not"
            token = d.token if full_tokens else shorten(d.token)
            lines.append(f"    {d.topic}  {token}  ({where})")
    if not result.topics:
        lines.append("  nothing to reconcile: no topics known")
    return "\n".join(lines)
