"""The metrics a finished command exports: names and labels by Prometheus conventions, the
timestamps carried across failed commands, and a textfile written whole."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from topic_sync import store
from topic_sync.app import metrics
from topic_sync.engine.run import RunOutcome, RunResult
from topic_sync.engine.types import SyncCounts
from topic_sync.errors import DeadTokenGuard, ExitCode

STARTED = dt.datetime(2026, 11, 22, 6, 30, tzinfo=dt.UTC)
ENDED = STARTED + dt.timedelta(seconds=95)


def _published() -> metrics.Finished:
    counts = SyncCounts(added=90, removed=10, attempts=110, retries=6, wait_seconds=2.5)
    counts.failures = Counter(
        {("subscribe", "internal-error"): 6, ("unsubscribe", "rate-limited"): 2}
    )
    plan = store.Plan(
        topic="jobreco-1",
        audience_lines=103,
        audience_size=100,
        duplicates=3,
        skipped=1,
        to_add=92,
        to_remove=10,
        members_before=20,
        newly_removed=10,
    )
    run = RunResult(
        RunOutcome.PUBLISHED,
        STARTED.date(),
        "jobreco",
        "jobreco-1",
        plan=plan,
        counts=counts,
        failed={"internal-error": 2},
        owed_subscriptions=2,
        message_id="m1",
        phases={"load": 0.5, "plan": 0.2, "additions": 80.0, "publish": 0.3},
    )
    return metrics.Finished(
        "run",
        "jobreco",
        True,
        STARTED,
        ENDED,
        ExitCode.OK,
        run=run,
        requests=110,
        throttled=4,
        pacer_wait=1.25,
    )


def _families(finished: metrics.Finished, carried=None, identity=True):
    text = generate_latest(metrics.registry(finished, carried or {}, identity=identity)).decode()
    return list(text_string_to_metric_families(text))


def _sample(families, name, **labels):
    found = [
        s.value
        for f in families
        for s in f.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_names_types_and_labels_follow_prometheus_conventions() -> None:
    for m in metrics.METRICS:
        assert m.name.startswith("topic_sync_")
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert m.kind in ("gauge", "counter")
        if "seconds" in m.name:
            assert m.name.endswith(("_seconds", "_seconds_total")), m.name
        # Low cardinality: never a token, never a topic (a topic per day is a series per day).
        assert set(m.labels) <= {"op", "code", "phase", "direction"}, m.name
        assert m.help.strip()
    assert len({m.name for m in metrics.METRICS}) == len(metrics.METRICS)


def test_a_published_run_exports_what_it_did() -> None:
    families = _families(_published())
    who = {"campaign": "jobreco", "command": "run"}
    assert _sample(families, "topic_sync_audience_tokens", **who) == 100
    assert _sample(families, "topic_sync_planned_tokens", op="subscribe", **who) == 92
    assert _sample(families, "topic_sync_tokens_added_total", **who) == 90
    assert _sample(families, "topic_sync_tokens_removed_total", **who) == 10
    assert (
        _sample(families, "topic_sync_token_failures_total", op="subscribe", code="internal-error")
        == 6
    )
    assert (
        _sample(families, "topic_sync_token_failures_total", op="unsubscribe", code="rate-limited")
        == 2
    )
    assert _sample(families, "topic_sync_failed_tokens", code="internal-error") == 2
    assert _sample(families, "topic_sync_tokens_owed", op="subscribe") == 2
    assert _sample(families, "topic_sync_fcm_throttled_total") == 4
    assert _sample(families, "topic_sync_pacer_wait_seconds_total") == 1.25
    assert _sample(families, "topic_sync_retry_wait_seconds_total") == 2.5
    assert _sample(families, "topic_sync_phase_duration_seconds", phase="additions") == 80.0
    assert _sample(families, "topic_sync_last_run_duration_seconds") == 95
    assert _sample(families, "topic_sync_last_run_published") == 1
    assert _sample(families, "topic_sync_last_success_timestamp_seconds") == ENDED.timestamp()
    assert _sample(families, "topic_sync_last_publish_timestamp_seconds") == ENDED.timestamp()
    # Counters carry no _created series: a run's counts are the whole story.
    assert not any(s.name.endswith("_created") for f in families for s in f.samples)
    exported = {s.name for f in families for s in f.samples}
    assert exported <= {m.name for m in metrics.METRICS}


def test_a_failed_command_carries_the_last_success_and_says_why() -> None:
    carried = {
        "topic_sync_last_success_timestamp_seconds": 1000.0,
        "topic_sync_last_publish_timestamp_seconds": 900.0,
    }
    failed = metrics.Finished(
        "run", "jobreco", True, STARTED, ENDED, ExitCode.REFUSED, error=DeadTokenGuard("x")
    )
    families = _families(failed, carried)
    assert _sample(families, "topic_sync_last_run_success") == 0
    assert _sample(families, "topic_sync_last_run_exit_code") == 5
    assert _sample(families, "topic_sync_dead_token_guard_tripped") == 1
    assert _sample(families, "topic_sync_last_success_timestamp_seconds") == 1000.0
    assert _sample(families, "topic_sync_last_publish_timestamp_seconds") == 900.0
    assert _sample(families, "topic_sync_last_run_published") == 0
    # Nothing to carry: the series is absent rather than a made-up time.
    assert not any(
        s.name == "topic_sync_last_success_timestamp_seconds"
        for f in _families(failed, {})
        for s in f.samples
    )


def test_without_identity_labels_for_a_pushgateway() -> None:
    families = _families(_published(), identity=False)
    assert all(not {"campaign", "command"} & s.labels.keys() for f in families for s in f.samples)


def test_carried_values_come_only_from_the_same_campaign_and_command() -> None:
    text = (
        "# TYPE topic_sync_last_success_timestamp_seconds gauge\n"
        'topic_sync_last_success_timestamp_seconds{campaign="jobreco",command="run"} 10\n'
        'topic_sync_last_success_timestamp_seconds{campaign="jobreco",command="reconcile"} 20\n'
        'topic_sync_last_success_timestamp_seconds{campaign="other",command="run"} 30\n'
        'topic_sync_last_success_timestamp_seconds{campaign="jobreco",command="run",job="x"} 40\n'
        "# TYPE topic_sync_audience_tokens gauge\n"
        'topic_sync_audience_tokens{campaign="jobreco",command="run"} 99\n'
    )
    assert metrics.read_carried(text, "jobreco", "run") == {
        "topic_sync_last_success_timestamp_seconds": 10.0
    }


def test_the_textfile_is_replaced_whole_and_an_unreadable_old_one_is_not_fatal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "topic-sync.prom"
    path.write_text("this is { not the exposition format\n")
    metrics.write_textfile(path, _published())
    families = list(text_string_to_metric_families(path.read_text()))
    assert _sample(families, "topic_sync_audience_tokens") == 100
    assert [p.name for p in tmp_path.iterdir()] == ["topic-sync.prom"]


def test_an_export_that_fails_is_described_not_raised(tmp_path: Path) -> None:
    exports = metrics.Exports(tmp_path / "missing" / "x.prom", "http://ops:pw@127.0.0.1:1")
    problems = exports.send(_published())
    assert len(problems) == 2
    assert problems[0].startswith(f"metrics file {tmp_path / 'missing' / 'x.prom'}: ")
    assert problems[1].startswith("pushgateway http://ops:***@127.0.0.1:1: ")
    assert "pw" not in problems[1].replace("pushgateway", "")


@pytest.mark.parametrize("url", ["ftp://x", "pushgateway:9091", "http://", ""])
def test_a_pushgateway_that_is_not_an_http_url_is_refused(url: str) -> None:
    from click.testing import CliRunner

    from topic_sync.cli.main import cli

    result = CliRunner().invoke(cli, ["run", "--date", "2026-11-22", "--pushgateway", url])
    assert result.exit_code == 2 and "--pushgateway" in result.stderr


def test_a_new_textfile_is_readable_by_node_exporter_whatever_the_umask(tmp_path: Path) -> None:
    """The cron wrapper's umask is 027; node_exporter runs as another user."""
    path = tmp_path / "topic-sync.prom"
    previous = os.umask(0o027)
    try:
        metrics.write_textfile(path, _published())
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == metrics.TEXTFILE_MODE == 0o644


def test_an_admins_mode_and_group_on_the_textfile_outlive_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "topic-sync.prom"
    metrics.write_textfile(path, _published())
    groups = [g for g in os.getgroups() if g != path.stat().st_gid] or [path.stat().st_gid]
    os.chown(path, -1, groups[0])
    path.chmod(0o640)
    metrics.write_textfile(path, _published())
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_gid == groups[0]
    assert (
        _sample(
            list(text_string_to_metric_families(path.read_text())), "topic_sync_audience_tokens"
        )
        == 100
    )


def test_a_percent_encoded_pushgateway_password_is_sent_decoded() -> None:
    url, _handler, headers = metrics._split_auth("http://ops%2Bteam:p%40ss%3Aw%2Frd@gw:9091/")
    assert url == "http://gw:9091"
    assert (
        base64.b64decode(headers["Authorization"].removeprefix("Basic ")) == b"ops+team:p@ss:w/rd"
    )


def test_a_publish_window_exports_lateness_margin_and_missed() -> None:
    from topic_sync.engine.publish import Window
    from topic_sync.errors import MissedWindow

    finished = _published()
    run = finished.run
    assert run is not None
    run.window = Window.of(STARTED.date(), dt.time(8, 0), None, "UTC")
    run.synced_at = STARTED + dt.timedelta(minutes=20)  # 06:50: 70 minutes to spare
    run.sent_at = run.window.publish_at + dt.timedelta(seconds=3)
    families = _families(finished)
    assert _sample(families, "topic_sync_publish_lateness_seconds") == 3
    assert _sample(families, "topic_sync_sync_margin_seconds") == 70 * 60
    assert _sample(families, "topic_sync_missed_window") == 0
    missed = metrics.Finished(
        "run", "jobreco", True, STARTED, ENDED, ExitCode.MISSED_WINDOW, error=MissedWindow("x")
    )
    assert _sample(_families(missed), "topic_sync_missed_window") == 1
    # Without a window there is no lateness to speak of: the series is absent.
    assert not any(
        s.name == "topic_sync_publish_lateness_seconds"
        for f in _families(_published())
        for s in f.samples
    )
