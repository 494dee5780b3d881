"""bench/bench.py --smoke: the benchmark's CI run. It starts its own PostgreSQL and emulator,
runs topic-sync's default transport and the firebase-admin v1 loop over two days of 10,000
tokens, checks each day's publish reached exactly that day's audience, and prints its tables."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO_ROOT
from topic_sync.config.table import DEFAULTS, TRANSPORTS

BENCH = REPO_ROOT / "bench" / "bench.py"
TIMEOUT = 300.0  # a smoke run takes about a minute on a 2-core machine


def _row(output: str, subject: str, day: int) -> list[str]:
    """The cells of the throughput table's row for a subject and day."""
    pattern = re.compile(rf"^\| {re.escape(subject)} +\| {day} +\|.*\|$", re.MULTILINE)
    rows = pattern.findall(output)
    assert rows, f"no table row for {subject} day {day} in:\n{output}"
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


@pytest.fixture(scope="module")
def bench() -> Any:
    """bench/bench.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["bench"]
    return module


def test_the_benchmark_knows_the_transports_and_the_default(bench: Any) -> None:
    assert bench.TRANSPORTS == TRANSPORTS
    assert DEFAULTS.transport == bench.DEFAULT_TRANSPORT


def test_a_quota_cell_is_also_held_to_what_the_machine_syncs_unpaced(bench: Any) -> None:
    settings, _ = bench.parse_settings(
        ["--quota", "3000", "--transport", "v1-direct", "--baselines", "none", "--unpaced"]
    )
    assert settings.unpaced and bench.unpaced(settings).quota == 0
    assert bench.unpaced(settings).rate_limit == bench.NO_PACING

    def day(subject: str, number: int, additions: int, seconds: float) -> Any:
        result = bench.DayResult(subject, 1, number, ok=True, wall=seconds + 1.0)
        result.to_add, result.phases = additions, {"additions": seconds}
        return result

    paced, ceiling = "topic-sync v1-direct", "topic-sync v1-direct unpaced"
    results = [
        day(paced, 1, 25_000, 10.0),  # 2,500/s
        day(ceiling, 1, 25_000, 25_000 / 2_800),  # the machine: 2,800/s, under the quota
        day(paced, 2, 8_000, 8_000 / 2_700),
        day(ceiling, 2, 8_000, 8_000 / 3_500),  # the machine above the quota
    ]
    rows = {(r["subject"], r["day"]): r for r in bench.summarise(settings, results)["rows"]}
    assert rows[paced, 1]["held"] == "83.3"
    assert rows[paced, 1]["allowed"] == pytest.approx(2_800)
    assert rows[paced, 1]["held_of_allowed"] == "89.3"
    assert rows[paced, 2]["allowed"] == 3_000  # the quota, the lower of the two
    assert rows[paced, 2]["held_of_allowed"] == rows[paced, 2]["held"] == "90.0"
    assert rows[ceiling, 1]["allowed"] is None and rows[ceiling, 1]["held"] == "–"


@pytest.mark.heavy  # the benchmark, run whole
def test_smoke_run_is_correct_and_prints_the_tables() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--tokens", "10000"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "### Throughput" in done.stdout and "### Phases" in done.stdout
    for subject in (f"topic-sync {DEFAULTS.transport}", "v1-loop"):
        for day, operations in ((1, "10,000"), (2, "4,000")):
            cells = _row(done.stdout, subject, day)
            assert cells[2] == operations, cells  # day 2: 2,000 removals + 2,000 additions
            assert cells[-1] == "1/1", cells  # the day's publish reached exactly its audience
    assert "### Errors" not in done.stdout


def test_the_emulator_can_be_given_a_cpu_of_its_own_and_the_client_a_load(
    bench: Any, tmp_path: Path
) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.fail("this test needs two CPUs")  # CI and the README's machine have them
    settings, _ = bench.parse_settings(["--emulator-cpu", str(cpus[-1]), "--client-load", "2"])
    assert (settings.emulator_cpu, settings.client_load) == (cpus[-1], 2)
    emulator = bench.Emulator(tmp_path / "emulator.log", cpus[-1])
    load = bench.ClientLoad(2)
    try:
        assert os.sched_getaffinity(emulator.proc.pid) == {cpus[-1]}
        assert [p.poll() for p in load.procs] == [None, None]  # still burning
    finally:
        load.stop()
        emulator.stop()
    assert all(p.returncode is not None for p in load.procs)
    # The rest, this process's children included, is kept off the emulator's CPU.
    placed = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import os, sys; sys.path.insert(0, {str(BENCH.parent)!r}); import bench; "
            f"print(bench.place({cpus[-1]})); print(sorted(os.sched_getaffinity(0)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line, affinity = placed.stdout.splitlines()
    assert f"emulator on CPU {cpus[-1]}" in line
    assert affinity == str(cpus[:-1])


def test_an_emulator_cpu_that_is_not_there_is_refused(bench: Any) -> None:
    with pytest.raises(SystemExit) as refused:
        bench.parse_settings(["--emulator-cpu", "4096"])
    assert refused.value.code == 2
