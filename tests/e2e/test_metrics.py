"""Metrics and JSON logs of the real CLI, against PostgreSQL and the emulator: the textfile
parsed back with prometheus-client's own parser, a Pushgateway played by a local HTTP server,
and `--log-format json` read line by line."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import DAY1, describe, make_tokens, run_args, run_cli, summary, write_lines
from topic_sync.app.metrics import BY_NAME

PREFIX = "jobreco"
POOL = 2


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition text: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(found, name: str, **labels: str) -> float:
    matches = [
        value
        for (n, have), value in found.items()
        if n == name and set(labels.items()) <= set(have)
    ]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples in {sorted(found)}"
    return matches[0]


def _run(tmp_path: Path, message_file: Path, env, tokens, day=DAY1, *extra: str):
    audience = write_lines(tmp_path / f"audience-{day}.txt", tokens)
    args = run_args(day, audience, message_file, prefix=PREFIX, pool_size=POOL, extra=extra)
    return run_cli(*args, env=env)


def test_a_live_run_writes_its_metrics_to_a_textfile(env, emulator, tmp_path, message_file):
    metrics = tmp_path / "topic-sync.prom"
    tokens = make_tokens("m", range(1500))
    proc = _run(tmp_path, message_file, env, tokens, DAY1, "--metrics-file", str(metrics))
    assert proc.returncode == 0, describe(proc)
    assert summary(proc)["metrics_errors"] == []
    found = _samples(metrics.read_text())
    who = {"campaign": PREFIX, "command": "run"}
    assert all(("campaign", PREFIX) in labels for _, labels in found)
    assert _value(found, "topic_sync_audience_tokens", **who) == 1500
    assert _value(found, "topic_sync_planned_tokens", op="subscribe", **who) == 1500
    assert _value(found, "topic_sync_tokens_added_total", **who) == 1500
    assert _value(found, "topic_sync_tokens_removed_total", **who) == 0
    assert _value(found, "topic_sync_last_run_published", **who) == 1
    assert _value(found, "topic_sync_last_run_success", **who) == 1
    assert _value(found, "topic_sync_last_run_exit_code", **who) == 0
    assert _value(found, "topic_sync_tokens_owed", op="subscribe", **who) == 0
    # 1500 tokens on v1 are 1500 requests to FCM's topic API, every one answered.
    assert _value(found, "topic_sync_fcm_requests_total", **who) >= 1500
    assert _value(found, "topic_sync_fcm_throttled_total", **who) == 0
    phases = {
        dict(labels)["phase"]
        for name, labels in found
        if name == "topic_sync_phase_duration_seconds"
    }
    assert {"load", "plan", "additions", "publish"} <= phases
    started = _value(found, "topic_sync_last_run_start_timestamp_seconds", **who)
    ended = _value(found, "topic_sync_last_run_end_timestamp_seconds", **who)
    assert started <= ended <= dt.datetime.now(dt.UTC).timestamp()
    assert _value(found, "topic_sync_last_success_timestamp_seconds", **who) == ended
    assert _value(found, "topic_sync_last_publish_timestamp_seconds", **who) == ended
    # Only declared metrics, and never a token in a label.
    assert {name.removesuffix("_total") for name, _ in found} <= {
        n.removesuffix("_total") for n in BY_NAME
    }
    text = metrics.read_text()
    assert not any(token in text for token in tokens[:50])
    # Written atomically: no temporary file left beside it.
    assert sorted(p.name for p in tmp_path.glob("*topic-sync.prom*")) == ["topic-sync.prom"]


def test_a_failed_run_keeps_the_last_success_and_publish_times(
    env, emulator, engine, tmp_path, message_file
):
    metrics = tmp_path / "topic-sync.prom"
    ok = _run(
        tmp_path,
        message_file,
        env,
        make_tokens("k", range(50)),
        DAY1,
        "--metrics-file",
        str(metrics),
    )
    assert ok.returncode == 0, describe(ok)
    first = _samples(metrics.read_text())
    success = _value(first, "topic_sync_last_success_timestamp_seconds")
    published = _value(first, "topic_sync_last_publish_timestamp_seconds")

    day2 = DAY1 + dt.timedelta(days=1)
    bad = [*make_tokens("k", range(10)), "not a token"]
    failed = _run(tmp_path, message_file, env, bad, day2, "--metrics-file", str(metrics))
    assert failed.returncode == 2, describe(failed)
    assert f"audience-{day2}.txt:11: whitespace inside token" in failed.stderr
    after = _samples(metrics.read_text())
    assert _value(after, "topic_sync_last_run_success") == 0
    assert _value(after, "topic_sync_last_run_exit_code") == 2
    assert _value(after, "topic_sync_last_run_published") == 0
    assert _value(after, "topic_sync_last_run_start_timestamp_seconds") > success
    # What alerts ask "how long since" survives the failed run.
    assert _value(after, "topic_sync_last_success_timestamp_seconds") == success
    assert _value(after, "topic_sync_last_publish_timestamp_seconds") == published
    assert _value(after, "topic_sync_dead_token_guard_tripped") == 0
    # What the failed run could not measure is absent, not stale from the day before.
    assert not any(name == "topic_sync_audience_tokens" for name, _ in after)


class _Gateway:
    """A Pushgateway stand-in: records every request; GET /metrics serves `exposed`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes, str | None]] = []
        self.exposed = ""
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                auth = self.headers.get("Authorization")
                gateway.requests.append((self.command, self.path, body, auth))

            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                self._record()
                data = gateway.exposed.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:  # noqa: N802
                self._record()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT  # noqa: N815

            def log_message(self, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def pushes(self) -> list[tuple[str, str, bytes, str | None]]:
        return [r for r in self.requests if r[0] in ("PUT", "POST")]


@pytest.fixture
def gateway() -> Iterator[_Gateway]:
    gw = _Gateway()
    gw.thread.start()
    yield gw
    gw.server.shutdown()
    gw.server.server_close()
    gw.thread.join()


def test_a_run_pushes_its_metrics_to_the_pushgateway(
    env, emulator, tmp_path, message_file, gateway
):
    # Basic auth in the URL goes in a header, decoded (a URL percent-encodes an @ or a :),
    # never into the path or the output.
    url = gateway.url.replace("http://", "http://ops:s3cr%40t%3A1@")
    ok = _run(tmp_path, message_file, env, make_tokens("p", range(30)), DAY1, "--pushgateway", url)
    assert ok.returncode == 0, describe(ok)
    assert summary(ok)["metrics_errors"] == []
    ((method, path, body, auth),) = gateway.pushes()
    assert method == "PUT"
    assert path == f"/metrics/job/topic-sync/campaign/{PREFIX}/command/run"
    assert auth is not None and auth.startswith("Basic ")
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"ops:s3cr@t:1"
    assert "s3cr" not in ok.stderr + ok.stdout
    found = _samples(body.decode())
    # The grouping key names campaign and command: the pushed series must not repeat them.
    assert all(not {"campaign", "command", "job"} & dict(labels).keys() for _, labels in found)
    assert _value(found, "topic_sync_audience_tokens") == 30
    assert _value(found, "topic_sync_tokens_added_total") == 30
    assert _value(found, "topic_sync_last_run_published") == 1
    success = _value(found, "topic_sync_last_success_timestamp_seconds")

    # What the gateway now exposes for the group (with its grouping labels): a failed run
    # reads the last success back from it, and pushes it again.
    gateway.exposed = (
        "# TYPE topic_sync_last_success_timestamp_seconds gauge\n"
        f'topic_sync_last_success_timestamp_seconds{{campaign="{PREFIX}",command="run",'
        f'instance="",job="topic-sync"}} {success}\n'
        f'topic_sync_last_success_timestamp_seconds{{campaign="other",command="run",'
        f'instance="",job="topic-sync"}} 12345\n'
    )
    day2 = DAY1 + dt.timedelta(days=1)
    failed = _run(tmp_path, message_file, env, ["bad token"], day2, "--pushgateway", url)
    assert failed.returncode == 2, describe(failed)
    assert len(gateway.pushes()) == 2
    found = _samples(gateway.pushes()[-1][2].decode())
    assert _value(found, "topic_sync_last_run_success") == 0
    assert _value(found, "topic_sync_last_success_timestamp_seconds") == success


def test_a_failing_export_changes_nothing_but_is_reported(
    env, emulator, engine, tmp_path, message_file
):
    missing = tmp_path / "no-such-folder" / "topic-sync.prom"
    proc = _run(
        tmp_path,
        message_file,
        env,
        make_tokens("f", range(20)),
        DAY1,
        "--metrics-file",
        str(missing),
        "--pushgateway",
        "http://127.0.0.1:1",
    )
    assert proc.returncode == 0, describe(proc)
    result = summary(proc)
    assert result["status"] == "published"
    errors = result["metrics_errors"]
    assert len(errors) == 2
    assert errors[0].startswith(f"metrics file {missing}:")
    assert errors[1].startswith("pushgateway http://127.0.0.1:1:")
    assert "metrics not exported" in proc.stderr and str(missing) in proc.stderr


def test_log_format_json_gives_one_object_per_line(env, emulator, tmp_path, message_file):
    tokens = make_tokens("j", range(1200))
    proc = _run(tmp_path, message_file, env, tokens, DAY1, "--log-format", "json")
    assert proc.returncode == 0, describe(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) >= 3
    events = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) for e in events)
    assert {e["run_id"] for e in events} == {events[0]["run_id"]}
    assert all(e["campaign"] == PREFIX and e["command"] == "run" for e in events)
    assert all({"ts", "level", "event"} <= e.keys() for e in events)
    kinds = [e["event"] for e in events]
    assert "progress" in kinds and kinds[-1] == "run finished"
    last = events[-1]
    assert last["status"] == "published" and last["added"] == 1200
    assert {"load", "plan", "additions", "publish"} <= last["phases"].keys()
    assert last["topic"] == summary(proc)["topic"]
    assert any(e.get("phase") == "additions" and e["done"] == 1200 for e in events)
    # No token is ever shown whole.
    assert not any(token in proc.stderr for token in tokens)


def test_an_error_with_log_format_json_is_one_json_line(env, emulator, tmp_path, message_file):
    proc = _run(tmp_path, message_file, env, ["bad token"], DAY1, "--log-format", "json")
    assert proc.returncode == 2, describe(proc)
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    error = events[-1]
    assert error["event"] == "error" and error["level"] == "error" and error["exit_code"] == 2
    assert ".txt:1: whitespace inside token" in error["message"] and error["campaign"] == PREFIX


def test_an_audit_exports_its_own_metrics(env, emulator, tmp_path, message_file):
    tokens = make_tokens("a", range(40))
    assert _run(tmp_path, message_file, env, tokens).returncode == 0
    metrics = tmp_path / "audit.prom"
    proc = run_cli(
        "reconcile",
        "--topic-prefix",
        PREFIX,
        "--pool-size",
        str(POOL),
        "--audit",
        "--metrics-file",
        str(metrics),
        "--json",
        env=env,
    )
    assert proc.returncode == 0, describe(proc)
    assert json.loads(proc.stdout)["metrics_errors"] == []
    found = _samples(metrics.read_text())
    who = {"campaign": PREFIX, "command": "audit"}
    assert _value(found, "topic_sync_audit_tokens", **who) == 40
    assert _value(found, "topic_sync_audit_drift", direction="in_fcm_not_in_table", **who) == 0
    assert _value(found, "topic_sync_audit_drift", direction="in_table_not_in_fcm", **who) == 0
    assert _value(found, "topic_sync_last_run_success", **who) == 1
    assert _value(found, "topic_sync_tokens_owed", op="unsubscribe", **who) == 0
    assert not any(name == "topic_sync_last_run_published" for name, _ in found)
