"""README's first command: the demo runs days end to end and checks its own recipients."""

from __future__ import annotations

from tests.support import describe, run_cli


def test_demo_runs_days_with_exact_recipients(tmp_path, env) -> None:
    env = {k: v for k, v in env.items() if k != "FCM_EMULATOR_HOST"}  # it starts its own
    done = run_cli("demo", "--days", "3", "--size", "300", "--workdir", tmp_path, env=env)
    assert done.returncode == 0, describe(done)
    rows = done.stdout.strip().splitlines()
    assert rows[0].split()[:3] == ["date", "topic", "audience"]
    assert len(rows) == 4 and all(row.endswith("yes") for row in rows[1:])
    # Day 3 reuses the topic closest to its audience, day 2's: a day's churn, not two.
    day2, day3 = rows[2].split(), rows[3].split()
    assert day3[1] == day2[1] != rows[1].split()[1]
    # 60 joined; 60 left, less the devices found dead on day 2 (never subscribed to it).
    assert int(day3[3]) == 60 and 55 <= int(day3[4]) <= 60
    assert "exactly that day's valid audience" in done.stderr
    assert (tmp_path / "message.json").exists()
