"""bench/bench.py --smoke: the benchmark's CI run. It starts its own PostgreSQL and emulator,
runs topic-sync's default transport and the firebase-admin v1 loop over two days of 10,000
tokens, checks each day's publish reached exactly that day's audience, and prints its tables."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

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


def test_the_benchmark_knows_the_transports_and_the_default() -> None:
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = bench  # its dataclasses look their module up
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules["bench"]
    assert bench.TRANSPORTS == TRANSPORTS
    assert DEFAULTS.transport == bench.DEFAULT_TRANSPORT


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
