#!/usr/bin/env python3
"""topic-sync's audience load next to `psql \\copy` of the same file.

    .venv/bin/python bench/load_vs_copy.py --tokens 1000000 --runs 5

Starts a private PostgreSQL (EmbeddedServer, in a temporary folder), writes one file of
FCM-shaped 160-character tokens, then alternates, `--runs` times each:
- `psql -c '\\copy audience_in (token) from FILE'` into a temporary table shaped like the
  run's own, in one psql process (its start-up included);
- topic-sync's load phase as `run` does it: `iter_audience` (reading, validating every
  line) feeding `store.load_audience` (COPY into the same temporary table), in this process.
Prints the median and range of each and their ratio. Needs `psql` on PATH.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from sqlalchemy import create_engine  # noqa: E402

from bench import make_token  # noqa: E402
from topic_sync.inputs.audience import iter_audience  # noqa: E402
from topic_sync.store import subscriptions  # noqa: E402
from topic_sync.store.db import sqlalchemy_url  # noqa: E402
from topic_sync.store.embedded import EmbeddedServer  # noqa: E402


def psql_copy(url: str, path: Path) -> float:
    script = (
        "CREATE TEMP TABLE audience_in (token text NOT NULL);\n"
        f"\\copy audience_in (token) from '{path}'\n"
    )
    start = time.perf_counter()
    subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", url], input=script, text=True, check=True
    )
    return time.perf_counter() - start


def topic_sync_load(engine_url: str, path: Path, expected: int) -> float:
    engine = create_engine(engine_url)
    try:
        with engine.connect() as conn:  # connecting is outside the timing, as in a run
            start = time.perf_counter()
            with conn.begin():
                loaded = subscriptions.load_audience(conn, iter_audience(path))
            seconds = time.perf_counter() - start
    finally:
        engine.dispose()
    assert loaded == expected, (loaded, expected)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("psql") is None:
        sys.exit("psql is not on PATH")
    folder = Path(tempfile.mkdtemp(prefix="topic-sync-load-"))
    folder.chmod(0o755)  # the server's own user reads the data folder's parent when root
    server = EmbeddedServer(folder / "pg")
    try:
        url = server.url()
        path = folder / "audience.txt"
        rng = random.Random(1)
        with path.open("w") as f:
            for _ in range(args.tokens):
                f.write(make_token(rng) + "\n")
        path.chmod(0o644)
        libpq_url = sqlalchemy_url(url).replace("postgresql+psycopg://", "postgresql://")
        copies, loads = [], []
        for _ in range(args.runs):
            copies.append(psql_copy(libpq_url, path))
            loads.append(topic_sync_load(sqlalchemy_url(url), path, args.tokens))
        size = path.stat().st_size / 1e6
        print(f"{args.tokens:,} tokens ({size:.0f} MB), {args.runs} runs each, median (min-max)")
        for name, xs in (("psql \\copy", copies), ("topic-sync load", loads)):
            print(f"- {name}: {statistics.median(xs):.2f} s ({min(xs):.2f}-{max(xs):.2f})")
        print(f"- ratio: {statistics.median(loads) / statistics.median(copies):.2f}x")
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
