"""Prometheus metrics of one finished command: built fresh from its result, then written to a
textfile (for node_exporter's textfile collector) and/or pushed to a Pushgateway.

`METRICS` is the one list of what topic-sync exports (the table in docs/operator-guide.md,
the alert rules and the dashboard are checked against it). Every series carries `campaign`
(the topic prefix) and `command` (run, reconcile or audit); a few add one low-cardinality label
(`op`, `code`, `phase`, `direction`). Never a token, never a topic. Counts are of this
command's own work: a `_total` counter starts at 0 with every command, like any process.

The timestamps of the last success and the last publish must outlive a command that
failed (or did not publish): alerts ask "how long since". A command that did not refresh
one reads it back from where the previous command exported it (the file, or the gateway)
and exports it again.

Exporting never changes a command's outcome: what went wrong is returned as text, for
the caller to show.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import stat
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import default_handler, generate_latest, push_to_gateway
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from topic_sync.config.table import Settings
from topic_sync.engine.reconcile import ReconcileResult
from topic_sync.engine.run import RunOutcome, RunResult
from topic_sync.errors import DeadTokenGuard, ExitCode
from topic_sync.redact import mask_url, scrub

JOB = "topic-sync"
PREFIX = "topic_sync_"
IDENTITY = ("campaign", "command")
PUSH_TIMEOUT = 10.0  # seconds, for each request to the gateway
COMMANDS = ("run", "reconcile", "audit")


@dataclass(frozen=True)
class MetricDef:
    """One exported metric: its exposed name (counters with `_total`), type, labels beyond
    campaign and command, and meaning."""

    name: str
    kind: str  # "gauge" or "counter"
    labels: tuple[str, ...]
    help: str


def _m(name: str, kind: str, help: str, *labels: str) -> MetricDef:
    return MetricDef(PREFIX + name, kind, labels, help)


METRICS: tuple[MetricDef, ...] = (
    _m("last_run_start_timestamp_seconds", "gauge", "When the last command started (Unix time)."),
    _m("last_run_end_timestamp_seconds", "gauge", "When the last command ended (Unix time)."),
    _m("last_run_duration_seconds", "gauge", "How long the last command took, start to end."),
    _m("last_run_success", "gauge", "1 if the last command exited 0, else 0."),
    _m("last_run_exit_code", "gauge", "The last command's exit code (see Exit codes)."),
    _m("last_run_live", "gauge", "1 if the last command was live, 0 for a dry run."),
    _m(
        "last_success_timestamp_seconds",
        "gauge",
        "When a command last exited 0 (Unix time); kept across failed commands.",
    ),
    _m(
        "dead_token_guard_tripped",
        "gauge",
        "1 if the last command was stopped by the dead-token guard (--max-dead), else 0.",
    ),
    _m(
        "last_run_published",
        "gauge",
        "run: 1 if the day's message is published (now or before), else 0.",
    ),
    _m(
        "last_publish_timestamp_seconds",
        "gauge",
        "run: when a run last ended with its day published (Unix time); kept across runs.",
    ),
    _m(
        "publish_lateness_seconds",
        "gauge",
        "run: seconds the message was sent after publish_at (0: on time); only with publish_at.",
    ),
    _m(
        "sync_margin_seconds",
        "gauge",
        "run: publish_at minus the sync's end (negative: it ended after publish_at); only with "
        "publish_at.",
    ),
    _m(
        "missed_window",
        "gauge",
        "run: 1 if the day missed its publish window (not sent by publish_by: exit 13), else 0.",
    ),
    _m("phase_duration_seconds", "gauge", "run: seconds the last run spent per phase.", "phase"),
    _m("audience_tokens", "gauge", "run: distinct tokens in the day's audience."),
    _m("audience_duplicates", "gauge", "run: duplicate audience lines merged."),
    _m("audience_skipped_tokens", "gauge", "run: audience tokens known invalid or forgotten."),
    _m("planned_tokens", "gauge", "run: tokens the plan adds (subscribe) or removes.", "op"),
    _m("tokens_added_total", "counter", "Tokens confirmed subscribed to the topic."),
    _m("tokens_removed_total", "counter", "Tokens confirmed unsubscribed from the topic."),
    _m("token_attempts_total", "counter", "Token attempts sent to FCM, retries included."),
    _m("token_retries_total", "counter", "Token attempts that were retries."),
    _m(
        "token_failures_total",
        "counter",
        "Token attempts that failed, per operation and error code (retries included).",
        "op",
        "code",
    ),
    _m(
        "failed_tokens",
        "gauge",
        "run: tokens still failed at the end of the run, per error code (what report lists).",
        "code",
    ),
    _m("tokens_owed", "gauge", "Tokens still owed a subscribe or an unsubscribe at the end.", "op"),
    _m("fcm_requests_total", "counter", "Answers from FCM's topic API, 429s included."),
    _m("fcm_throttled_total", "counter", "Answers from FCM's topic API that were 429."),
    _m("retry_wait_seconds_total", "counter", "Seconds waited in retry backoff."),
    _m("pacer_wait_seconds_total", "counter", "Seconds requests were held back by the pacer."),
    _m("audit_tokens", "gauge", "audit: tokens whose FCM subscriptions were listed."),
    _m("audit_unknown_tokens", "gauge", "audit: tokens FCM does not know at all."),
    _m(
        "audit_drift",
        "gauge",
        "audit: token-topic pairs where FCM and the table disagree, per direction.",
        "direction",
    ),
)
BY_NAME = {m.name: m for m in METRICS}
CARRIED = (PREFIX + "last_success_timestamp_seconds", PREFIX + "last_publish_timestamp_seconds")


@dataclass
class Finished:
    """What one command did, for its metrics: filled in as it goes, whatever ends it."""

    command: str  # run, reconcile or audit
    campaign: str
    live: bool
    started: dt.datetime
    ended: dt.datetime | None = None
    exit_code: ExitCode = ExitCode.FAILED
    error: BaseException | None = None
    run: RunResult | None = None
    reconcile: ReconcileResult | None = None
    requests: int | None = None  # the pacer's tallies, when a pacer was built
    throttled: int | None = None
    pacer_wait: float | None = None
    problems: list[str] = field(default_factory=list)  # exports that failed


Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples(f: Finished, carried: Mapping[str, float]) -> Samples:
    """Every sample the command exports, by metric name, without campaign and command."""
    out: Samples = {}

    def put(name: str, value: float | None, **labels: str) -> None:
        if value is not None:
            out.setdefault(PREFIX + name, []).append((labels, float(value)))

    ended = f.ended or f.started
    ok = f.exit_code is ExitCode.OK
    put("last_run_start_timestamp_seconds", f.started.timestamp())
    put("last_run_end_timestamp_seconds", ended.timestamp())
    put("last_run_duration_seconds", (ended - f.started).total_seconds())
    put("last_run_success", int(ok))
    put("last_run_exit_code", int(f.exit_code))
    put("last_run_live", int(f.live))
    put(
        "last_success_timestamp_seconds",
        ended.timestamp() if ok else carried.get(PREFIX + "last_success_timestamp_seconds"),
    )
    put("dead_token_guard_tripped", int(isinstance(f.error, DeadTokenGuard)))
    if f.command == "run":
        r = f.run
        published = r is not None and r.status in (
            RunOutcome.PUBLISHED,
            RunOutcome.ALREADY_PUBLISHED,
        )
        put("last_run_published", int(published))
        put(
            "last_publish_timestamp_seconds",
            ended.timestamp()
            if published
            else carried.get(PREFIX + "last_publish_timestamp_seconds"),
        )
        put("missed_window", int(f.exit_code is ExitCode.MISSED_WINDOW))
        if r is not None:
            put("publish_lateness_seconds", r.lateness_seconds)
            put("sync_margin_seconds", r.sync_margin_seconds)
    counts = f.run.counts if f.run else f.reconcile.counts if f.reconcile else None
    if f.run is not None:
        for phase, seconds in sorted(f.run.phases.items()):
            put("phase_duration_seconds", seconds, phase=phase)
        plan = f.run.plan
        if plan is not None:
            put("audience_tokens", plan.audience_size)
            put("audience_duplicates", plan.duplicates)
            put("audience_skipped_tokens", plan.skipped)
            put("planned_tokens", plan.to_add, op="subscribe")
            put("planned_tokens", plan.to_remove, op="unsubscribe")
        for code, n in sorted(f.run.failed.items()):
            put("failed_tokens", n, code=code)
        if f.run.status is not RunOutcome.DRY_RUN:
            put("tokens_owed", f.run.owed_subscriptions, op="subscribe")
            put("tokens_owed", 0, op="unsubscribe")  # a published day owes no removal
    if f.reconcile is not None:
        rec = f.reconcile
        put("tokens_owed", sum(t.left_add for t in rec.topics), op="subscribe")
        put("tokens_owed", sum(t.left_remove for t in rec.topics), op="unsubscribe")
        if f.command == "audit":
            put("audit_tokens", rec.audited)
            put("audit_unknown_tokens", rec.unknown_tokens)
            put("audit_drift", rec.drift_in_fcm, direction="in_fcm_not_in_table")
            put("audit_drift", rec.drift_missing, direction="in_table_not_in_fcm")
    if counts is not None:
        put("tokens_added_total", counts.added)
        put("tokens_removed_total", counts.removed)
        put("token_attempts_total", counts.attempts)
        put("token_retries_total", counts.retries)
        put("retry_wait_seconds_total", counts.wait_seconds)
        for (op, code), n in sorted(counts.failures.items()):
            put("token_failures_total", n, op=op, code=code)
    put("fcm_requests_total", f.requests)
    put("fcm_throttled_total", f.throttled)
    put("pacer_wait_seconds_total", f.pacer_wait)
    unknown = set(out) - set(BY_NAME)
    assert not unknown, f"metrics not declared in METRICS: {unknown}"
    return out


class _Snapshot(Collector):
    """A registry's only collector: the samples of one finished command."""

    def __init__(self, found: Samples, identity: Mapping[str, str]) -> None:
        self.found, self.identity = found, identity

    def collect(self) -> Iterator[Metric]:
        for metric in METRICS:
            rows = self.found.get(metric.name)
            if not rows:
                continue
            names = [*self.identity, *metric.labels]
            family: GaugeMetricFamily | CounterMetricFamily
            if metric.kind == "counter":
                family = CounterMetricFamily(metric.name, metric.help, labels=names)
            else:
                family = GaugeMetricFamily(metric.name, metric.help, labels=names)
            for labels, value in rows:
                family.add_metric(
                    [*self.identity.values(), *(labels[n] for n in metric.labels)], value
                )
            yield family


def registry(
    f: Finished, carried: Mapping[str, float], *, identity: bool = True
) -> CollectorRegistry:
    """A fresh registry holding the command's metrics. With `identity`, every series has
    campaign and command labels (a textfile); without, a Pushgateway's grouping key adds
    them."""
    reg = CollectorRegistry(auto_describe=True)
    labels = {"campaign": f.campaign, "command": f.command} if identity else {}
    reg.register(_Snapshot(samples(f, carried), labels))
    return reg


def read_carried(text: str, campaign: str, command: str) -> dict[str, float]:
    """The carried timestamps of this campaign and command in an exposition text."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name in CARRIED
                and labels.get("campaign") == campaign
                and labels.get("command") == command
                and labels.get("job", JOB) == JOB
            ):
                found[sample.name] = sample.value
    return found


# --- where metrics go --------------------------------------------------------------------------


def write_textfile(path: Path, f: Finished) -> None:
    """Atomically replace `path`: a temporary file in the same folder, fsync, rename.
    node_exporter never reads a half-written file, and a crash leaves the old one."""
    carried: dict[str, float] = {}
    if path.exists():
        try:
            carried = read_carried(path.read_text(encoding="utf-8"), f.campaign, f.command)
        except (ValueError, UnicodeDecodeError):
            carried = {}  # an unreadable old file is replaced; nothing to carry from it
    data = generate_latest(registry(f, carried))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            _keep_access(out.fileno(), path)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


TEXTFILE_MODE = 0o644
"""A new metrics file's mode, whatever the umask (the cron wrapper's is 027): node_exporter
runs as another user, and the file holds no secret."""


def _keep_access(fd: int, path: Path) -> None:
    """Give the new file the old one's mode and group (an admin's chmod or chgrp outlives the
    run), or TEXTFILE_MODE for the first one."""
    try:
        old = os.stat(path)
    except FileNotFoundError:
        os.fchmod(fd, TEXTFILE_MODE)
        return
    if old.st_gid != os.fstat(fd).st_gid:
        with contextlib.suppress(PermissionError):  # only a group this user is in
            os.fchown(fd, -1, old.st_gid)
    os.fchmod(fd, stat.S_IMODE(old.st_mode))


Handler = Callable[..., Callable[[], None]]


def _split_auth(url: str) -> tuple[str, Handler, dict[str, str]]:
    """The URL without userinfo, a push handler and request headers carrying it."""
    parts = urlsplit(url)
    headers: dict[str, str] = {}
    if parts.username is not None:
        # A URL carries them percent-encoded (a password with @ or : must be): send them as
        # they are.
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(secret).decode()
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        url = urlunsplit(parts._replace(netloc=netloc))

    def handler(**kwargs: Any) -> Callable[[], None]:
        kwargs["headers"] = [*kwargs["headers"], *headers.items()]
        result: Callable[[], None] = default_handler(**kwargs)
        return result

    return url.rstrip("/"), handler, headers


def push(gateway: str, f: Finished) -> None:
    """PUT the command's metrics to the gateway's group job/topic-sync/campaign/C/command/X.

    PUT replaces the whole group, so what a failed command cannot measure does not stay
    behind from an earlier one; the carried timestamps are first read from the gateway."""
    url, handler, headers = _split_auth(gateway)
    request = urllib.request.Request(url + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=PUSH_TIMEOUT) as answer:
        carried = read_carried(answer.read().decode("utf-8"), f.campaign, f.command)
    push_to_gateway(
        url,
        job=JOB,
        registry=registry(f, carried, identity=False),
        grouping_key={"campaign": f.campaign, "command": f.command},
        timeout=PUSH_TIMEOUT,
        handler=handler,
    )


@dataclass
class Exports:
    """Where a command's metrics go, and what went wrong sending them there."""

    metrics_file: Path | None
    pushgateway: str | None
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, settings: Settings) -> Exports:
        return cls(settings.metrics_file, settings.pushgateway)

    @property
    def wanted(self) -> bool:
        return self.metrics_file is not None or self.pushgateway is not None

    def send(self, f: Finished) -> list[str]:
        """Export to every destination; a failure is described, never raised."""
        self.problems = []
        if self.metrics_file is not None:
            try:
                write_textfile(self.metrics_file, f)
            except Exception as error:  # exporting must never change the command's outcome
                self.problems.append(f"metrics file {self.metrics_file}: {_reason(error)}")
        if self.pushgateway is not None:
            try:
                push(self.pushgateway, f)
            except Exception as error:  # same: described, never raised
                shown = mask_url(self.pushgateway)
                reason = scrub(_reason(error), self.pushgateway)
                self.problems.append(f"pushgateway {shown}: {reason}")
        return self.problems


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror if not error.filename else f"{error.strerror}: {error.filename}"
    return f"{type(error).__name__}: {error}"


def markdown_table() -> str:
    """`METRICS` as the table in docs/operator-guide.md (a test keeps the two equal)."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for m in METRICS:
        labels = ", ".join((*IDENTITY, *m.labels))
        rows.append(f"| `{m.name}` | {m.kind} | {labels} | {m.help} |")
    return "\n".join(rows)
