#!/usr/bin/env python3
"""Where a transport's client spends its CPU: py-spy over subscribe calls, emulator apart.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_client.py --transport v1 --tokens 5000
    .venv/bin/python bench/profile_client.py --transport v1-direct --tokens 5000

Starts the FCM emulator in its own process (so its CPU is not in the profile), then
subscribes `--tokens` FCM-shaped tokens in batches of 1000 through the transport's client,
as a run's drain does, in a child process sampled by py-spy (every thread: firebase-admin
fans a call out over threads, v1-direct runs an event loop in one). Prints the client's
CPU per token, wall tokens/s, and the functions most often on CPU: by own samples (the
frame running) and by inclusive samples (anywhere on the stack), over every active sample
of the child (start-up and the 1000-token warm-up included).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench import make_token  # noqa: E402
from topic_sync.fcm.sdk_bridge import initialize_app  # noqa: E402
from topic_sync.fcm.transports import TRANSPORTS, make_client  # noqa: E402

BATCH = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summarize(raw: Path, top: int) -> None:
    """Top frames of py-spy's raw (collapsed) stacks: `frame;frame;... count` per line."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames or not count.isdigit():
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"\n--- top {top} frames by {title} samples (of {total:,}) ---")
        for frame, n in counter.most_common(top):
            print(f"{n / total:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=TRANSPORTS, default="v1-direct")
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.work:
        spy = Path(sys.executable).with_name("py-spy")
        fd, name = tempfile.mkstemp(prefix="topic-sync-profile-", suffix=".txt")
        os.close(fd)
        raw = Path(name)
        command = [sys.executable, __file__, "--work", "--transport", args.transport]
        command += ["--tokens", str(args.tokens)]
        subprocess.run(
            [
                str(spy),
                "record",
                "-r",
                "50",
                "--nonblocking",
                "-f",
                "raw",
                "-o",
                str(raw),
                "--",
                *command,
            ],
            check=True,
        )
        summarize(raw, args.top)
        raw.unlink()
        return
    port = free_port()
    emulator = subprocess.Popen(
        [sys.executable, "-m", "topic_sync.cli", "emulator", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):  # up to 30 s for the emulator to listen
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/emulator/state", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        app = initialize_app(
            name="profile", project_id="bench-project", emulator_host=f"127.0.0.1:{port}"
        )
        client = make_client(app, args.transport)
        rng = random.Random(1)
        tokens = [make_token(rng) for _ in range(args.tokens)]
        client.subscribe(tokens[:BATCH], "warm-up")  # connections, credentials, imports
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, len(tokens), BATCH):
            result = client.subscribe(tokens[start : start + BATCH], "profile")
            assert all(reason is None for reason in result.reasons), result.reasons[:3]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        per_token = cpu * 1000 / args.tokens
        print(f"transport {args.transport}: {args.tokens:,} tokens in batches of {BATCH}")
        print(f"client CPU {per_token:.3f} ms/token, {args.tokens / wall:,.0f} tokens/s")
    finally:
        emulator.terminate()
        emulator.wait(10)


if __name__ == "__main__":
    main()
