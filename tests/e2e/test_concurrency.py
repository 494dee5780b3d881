"""Several processes at once on one date: cron fired twice, two hosts, an operator's rerun.

Whatever the interleaving, the day goes out at most once and to exactly its audience; each
process ends published, already-published or locked (3), never with a misdelivery.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest

from tests.support import (
    CLI_TIMEOUT,
    DAY1,
    REPO_ROOT,
    cli_command,
    describe,
    make_tokens,
    publishes_to,
    run_args,
    run_cli,
    topic,
    write_lines,
)

PREFIX = "many"
POOL = 2


def start(args, env) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args),
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs) -> list[subprocess.CompletedProcess[str]]:
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.mark.parametrize("processes", [2, 4])
def test_runs_of_one_date_at_once_publish_exactly_once(
    tmp_path, env, emulator, message_file, processes
):
    day3 = DAY1 + dt.timedelta(days=POOL)  # the same topic as day 1, with churn
    first = make_tokens("c", range(300))
    assert (
        run_cli(
            *run_args(
                DAY1,
                write_lines(tmp_path / "d1.txt", first),
                message_file,
                prefix=PREFIX,
                pool_size=POOL,
            ),
            env=env,
        ).returncode
        == 0
    )
    audience = make_tokens("c", range(100, 400))
    path = write_lines(tmp_path / "d3.txt", audience)
    emulator.set_latency(0.002)  # so the runs overlap
    args = run_args(
        day3, path, message_file, prefix=PREFIX, pool_size=POOL, extra=("--concurrency", "2")
    )

    results = finish([start(args, env) for _ in range(processes)])

    codes = sorted(r.returncode for r in results)
    assert set(codes) <= {0, 3}, [describe(r) for r in results]
    statuses = [json.loads(r.stdout)["status"] for r in results if r.returncode == 0]
    assert statuses.count("published") == 1, [describe(r) for r in results]
    [publish] = publishes_to(emulator, topic(PREFIX, POOL, day3))[1:]  # after day 1's
    assert publish.recipients == set(audience)
    # Every process that could not work said why, and a rerun has nothing left to do.
    for r in results:
        if r.returncode == 3:
            assert "lock" in r.stderr, describe(r)
    again = run_cli(*args, env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "already-published"


def test_run_and_reconcile_at_once(tmp_path, env, emulator, message_file):
    first = make_tokens("r", range(300))
    args1 = run_args(
        DAY1, write_lines(tmp_path / "d1.txt", first), message_file, prefix=PREFIX, pool_size=POOL
    )
    assert run_cli(*args1, env=env).returncode == 0
    day3 = DAY1 + dt.timedelta(days=POOL)
    audience = make_tokens("r", range(150, 450))
    path = write_lines(tmp_path / "d3.txt", audience)
    emulator.set_latency(0.002)
    run = run_args(day3, path, message_file, prefix=PREFIX, pool_size=POOL)
    repair = (
        "reconcile",
        "--topic-prefix",
        PREFIX,
        "--pool-size",
        POOL,
        "--live",
        "--full",
        "--retry-min-wait",
        "0",
        "--retry-max-wait",
        "0",
        "--json",
    )

    results = finish([start(run, env), start(repair, env)])

    assert {r.returncode for r in results} <= {0, 3}, [describe(r) for r in results]
    if results[0].returncode == 3:  # the repair held the lock: the day is run after it
        rerun = run_cli(*run, env=env)
        assert rerun.returncode == 0, describe(rerun)
    [publish] = publishes_to(emulator, topic(PREFIX, POOL, day3))[1:]
    assert publish.recipients == set(audience)
    assert emulator.members(topic(PREFIX, POOL, day3)) == set(audience)
