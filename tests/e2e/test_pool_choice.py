"""The cost policy and `simulate` through the real CLI, against PostgreSQL and the emulator.

Days run seconds apart here, so before each next date the publishes recorded so far are
made a day older (support.a_day_passes): the rest period is judged on the database's clock.
"""

from __future__ import annotations

import datetime as dt
import json
import random

from tests.support import (
    DAY1,
    a_day_passes,
    db_snapshot,
    describe,
    latest_publish,
    make_tokens,
    run_args,
    run_cli,
    run_row,
    summary,
    topic,
    write_lines,
)

PREFIX = "costly"
POOL = 3


def walk(days: int, size: int, seed: int = 11) -> list[list[str]]:
    """An audience that replaces a fifth of itself every day, from a base five times its size."""
    rng = random.Random(seed)
    population = make_tokens("w", range(5 * size))
    today = set(rng.sample(population, size))
    out = []
    for _ in range(days):
        out.append(sorted(today))
        leaving = set(rng.sample(sorted(today), size // 5))
        joining = set(rng.sample(sorted(set(population) - today), size // 5))
        today = (today - leaving) | joining
    return out


def test_days_under_the_cost_policy_reach_exactly_each_audience_and_commands_read_the_record(
    env, emulator, engine, tmp_path, message_file, transport
):
    audiences = walk(days=5, size=500)
    chosen = []
    for n, audience in enumerate(audiences):
        day = DAY1 + dt.timedelta(days=n)
        path = write_lines(tmp_path / f"audience-{day}.txt", audience)
        log_json = ("--log-format", "json") if n == len(audiences) - 1 else ()
        args = run_args(
            day,
            path,
            message_file,
            prefix=PREFIX,
            pool_size=POOL,
            transport=transport,
            policy=(),  # the default: cost
            extra=log_json,
        )
        proc = run_cli(*args, env=env)
        assert proc.returncode == 0, describe(proc)
        result = summary(proc)
        day_topic = result["topic"]
        chosen.append(day_topic)
        assert result["status"] == "published" and result["choice"]["policy"] == "cost"
        sent = latest_publish(emulator, day_topic)
        assert sent.recipients == set(audience) and sent.message["data"]["date"] == str(day)
        assert emulator.members(day_topic) == set(audience)
        assert run_row(engine, PREFIX, day)["topic"] == day_topic
        if n < POOL:  # the never-used topics first, in the ordinal rule's order
            assert (day_topic, result["choice"]["why"]) == (
                topic(PREFIX, POOL, day),
                "never used",
            )
        else:  # then yesterday's topic, a day's churn away
            assert (day_topic, result["choice"]["why"]) == (chosen[n - 1], "cheapest")
            assert result["to_add"] == result["to_remove"] == 100
        a_day_passes(engine)
    # The last day logged JSON lines: those after the choice name the topic.
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    planned = next(e for e in events if "to remove" in e.get("message", ""))
    assert planned["topic"] == chosen[-1]
    assert next(e for e in events if e["event"] == "run finished")["topic"] == chosen[-1]

    # status, report and reconcile --date read the topic each date recorded.
    status = run_cli("status", "--json", env=env)
    assert status.returncode == 0, describe(status)
    assert [r["topic"] for r in summary(status)["runs"]] == [chosen[-1]]
    report = run_cli("report", "--runs", "--format", "json", env=env)
    assert [r["topic"] for r in summary(report)["runs"]] == chosen[::-1]
    fourth = DAY1 + dt.timedelta(days=3)
    repair = run_cli(
        "reconcile", "--topic-prefix", PREFIX, "--date", fourth, "--backfill", "--json", env=env
    )
    assert repair.returncode == 0, describe(repair)
    assert [t["topic"] for t in summary(repair)["topics"]] == [chosen[3]]

    # A dry run of the next date shows each topic's operations and picks yesterday's.
    day = DAY1 + dt.timedelta(days=len(audiences))
    path = write_lines(tmp_path / f"audience-{day}.txt", audiences[-1])
    dry = run_cli(
        *run_args(day, path, message_file, prefix=PREFIX, pool_size=POOL, policy=(), live=False),
        env=env,
    )
    assert dry.returncode == 0, describe(dry)
    choice = summary(dry)["choice"]
    assert choice["topic"] == chosen[-1] and choice["why"] == "cheapest"
    assert {t["topic"]: t["operations"] for t in choice["topics"]}[chosen[-1]] == 0
    assert f"* {chosen[-1]}" in dry.stderr and "resting" in dry.stderr


def _history(folder, audiences, start=DAY1):
    folder.mkdir()
    for n, audience in enumerate(audiences):
        write_lines(folder / f"reco-{start + dt.timedelta(days=n)}.txt", audience)
    (folder / "_SUCCESS").write_text("")
    return folder


def test_simulate_replays_a_folder_of_audiences_and_changes_nothing(env, engine, tmp_path):
    audiences = walk(days=10, size=300)
    folder = _history(tmp_path / "reco", audiences)
    before = db_snapshot(engine)
    args = ("simulate", folder, "--pool-size", POOL, "--topic-prefix", "jobreco")
    proc = run_cli(*args, "--json", env=env)
    assert proc.returncode == 0, describe(proc)
    doc = summary(proc)
    assert "_SUCCESS: no date in its name, passed over" in proc.stderr
    assert [d["date"] for d in doc["days"]] == [str(DAY1 + dt.timedelta(days=n)) for n in range(10)]
    # The ordinal rule's figures are the set differences of each date's ordinal topic.
    held: dict[str, set[str]] = {}
    for day, audience in zip(doc["days"], audiences, strict=True):
        ordinal = topic("jobreco", POOL, dt.date.fromisoformat(day["date"]))
        before_day = held.get(ordinal, set())
        assert day["ordinal"]["topic"] == ordinal
        assert day["ordinal"]["to_add"] == len(set(audience) - before_day)
        assert day["ordinal"]["to_remove"] == len(before_day - set(audience))
        held[ordinal] = set(audience)
        assert day["ordinal"]["seconds"] == round(day["ordinal"]["operations"] / 3000, 3)
    # The cost policy: the pool filled first, then yesterday's topic, a day's churn each.
    cost = [d["cost"] for d in doc["days"]]
    assert [c["why"] for c in cost] == ["never used"] * POOL + ["cheapest"] * (10 - POOL)
    assert all(c["topic"] == cost[POOL - 1]["topic"] for c in cost[POOL:])
    assert all(c["operations"] == 120 for c in cost[POOL:])
    totals = doc["totals"]
    assert totals["cost"]["operations"] == POOL * 300 + (10 - POOL) * 120
    assert doc["ratio"] == round(totals["cost"]["operations"] / totals["ordinal"]["operations"], 4)
    assert doc["ratio"] < 1
    assert db_snapshot(engine) == before  # temporary tables, rolled back

    text = run_cli(*args, "--quota", "100", env=env)
    assert text.returncode == 0, describe(text)
    lines = text.stdout.splitlines()
    assert "cost policy" in lines[1] and "ordinal rule" in lines[1]
    assert lines[-2].startswith("total")
    assert lines[-1].startswith(f"cost policy: {totals['cost']['operations']:,} operations")
    assert "x the ordinal rule's" in lines[-1]
    assert db_snapshot(engine) == before


def test_simulate_names_a_bad_line_as_run_does_and_changes_nothing(env, engine, tmp_path):
    audiences = walk(days=4, size=50)
    audiences[2] = [*audiences[2][:2], "not a token", *audiences[2][2:]]
    folder = _history(tmp_path / "reco", audiences)
    before = db_snapshot(engine)
    proc = run_cli("simulate", folder, "--pool-size", 2, "--json", env=env)
    assert proc.returncode == 2, describe(proc)
    bad = folder / f"reco-{DAY1 + dt.timedelta(days=2)}.txt"
    doc = summary(proc)
    assert doc["kind"] == "bad_input" and doc["error"].startswith(f"{bad}:3: ")
    assert proc.stdout.count("\n") == 1  # the error document only: no table
    assert db_snapshot(engine) == before
