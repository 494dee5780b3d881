"""`topic-sync run` with a publish window, end to end: a day that can no longer publish by
its publish_by exits 13 sending nothing, `status` and `report` say it missed its window, and
--publish-late sends it, recorded as late. The real CLI in its own process (its clock is the
machine's: the day is long past), against PostgreSQL and the FCM emulator."""

from __future__ import annotations

from tests.support import (
    DAY1,
    describe,
    make_tokens,
    run_args,
    run_cli,
    run_row,
    summary,
    topic,
    write_lines,
)

PREFIX = "jobreco"


def test_a_day_past_publish_by_exits_13_and_publish_late_sends_it(
    env, emulator, engine, tmp_path, message_file
) -> None:
    audience = write_lines(tmp_path / "audience.txt", make_tokens("w", range(20)))
    window = ["--publish-at", "08:00", "--publish-by", "09:30"]
    args = run_args(DAY1, audience, message_file, prefix=PREFIX, pool_size=2, extra=window)

    missed = run_cli(*args, env=env)
    assert missed.returncode == 13, describe(missed)
    assert "missed its window" in missed.stderr and "--publish-late" in missed.stderr
    assert emulator.publishes == [] and emulator.members(topic(PREFIX, 2, DAY1)) == set()
    assert run_row(engine, PREFIX, DAY1)["status"] == "missed"

    status = run_cli("status", env=env)
    assert status.returncode != 0, describe(status)
    assert "MISSED" in status.stdout and "missed its window" in status.stdout
    report = run_cli("report", "--runs", env=env)
    assert "missed its window" in report.stdout, describe(report)

    late = run_cli(*args, "--publish-late", env=env)
    assert late.returncode == 0, describe(late)
    result = summary(late)
    assert result["status"] == "published" and result["late"] is True
    assert result["lateness_seconds"] > 0
    assert len(emulator.publishes) == 1
    row = run_row(engine, PREFIX, DAY1)
    assert row["status"] == "published" and row["publish_state"] == "sent"
    assert "published late" in run_cli("report", "--runs", env=env).stdout
