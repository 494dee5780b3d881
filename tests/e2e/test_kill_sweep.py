"""The kill sweep: SIGKILL the real CLI at many points of a day, rerun, and check FCM's truth.

Each case kills `topic-sync run` at one point chosen deterministically from a seed: while
the audience is loading, in the middle of the removals or the additions (before FCM served
a request, or after it served it but before the answer arrived), while it waits between the
last batch and the publish, and just before or just after FCM takes the message. Then it
reruns the day as an operator would (with --republish only when FCM shows that nothing
went out), and checks the emulator's own record: the day's recipients are exactly the day's
valid audience, there is exactly one publish for the date, and nothing is left owed.

Every case starts from the same day-1 state (a database cloned from a template, and the
emulator's membership restored), so the sweep costs two or three CLI runs per point.

Day 2 runs under the cost policy, the default: of the pool's two topics it picks day 1's,
a third of the audience away (the other holds an unrelated audience, and is the date's
ordinal topic). A run killed after its plan committed recorded that topic, and the rerun
must land on it; one killed before chooses again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support import (
    CLI_TIMEOUT,
    DAY1,
    REPO_ROOT,
    a_day_passes,
    cli_command,
    cli_env,
    create_database,
    describe,
    drop_database,
    make_tokens,
    publishes_to,
    run_args,
    run_cli,
    topic,
    write_lines,
)
from topic_sync.emulator import FcmEmulator

SEED = 20261203
POINTS = 32
PREFIX = "sweep"
POOL = 2
DAY0 = DAY1 - dt.timedelta(days=1)
DAY2 = DAY1 + dt.timedelta(days=1)  # the cost policy picks day 1's topic: removals, additions
TOPIC = topic(PREFIX, POOL, DAY1)
OTHER = topic(PREFIX, POOL, DAY0)  # day 2's ordinal topic, holding an unrelated audience
DAY0_AUDIENCE = make_tokens("o", range(300))
DAY1_AUDIENCE = make_tokens("k", range(300))
DAY2_AUDIENCE = make_tokens("k", range(100, 400))  # 100 leave, 100 join
DEAD = DAY2_AUDIENCE[-3:]  # joining tokens whose devices are gone: never in a publish
EXPECTED = set(DAY2_AUDIENCE) - set(DEAD)
PROPAGATION = "1"  # seconds: the window in which the "before publish" kill lands


@dataclass(frozen=True)
class KillPoint:
    phase: str  # load, removals, additions, propagation, publish
    transport: str
    nth: int  # which request of the phase's kind (or, for load, how many lines were fed)
    after: bool  # FCM served the request before the kill

    @property
    def name(self) -> str:
        when = "after" if self.after else "before"
        return f"{self.phase}-{self.transport}-{when}-{self.nth}"


def kill_points(seed: int, count: int) -> list[KillPoint]:
    """Distinct kill points, every phase and transport covered, chosen by the seed."""
    rng = random.Random(seed)
    phases = ["load", "removals", "additions", "propagation", "publish"]
    transports = ["v1", "v1-direct", "legacy-iid"]
    points: list[KillPoint] = []
    seen: set[KillPoint] = set()
    for attempt in range(100 * count):
        if len(points) == count:
            break
        phase = phases[attempt % len(phases)]  # a phase with few points just repeats itself
        transport = rng.choice(transports)
        after = rng.random() < 0.5
        if phase == "load":
            nth, after = rng.randrange(1000, 2800, 7), False
        elif phase in ("removals", "additions"):
            # v1: one request per token (100 of each); legacy: one batch carries them all.
            nth = 1 if transport == "legacy-iid" else rng.randint(1, 100)
        else:
            nth = 1
            after = after if phase == "publish" else False
        point = KillPoint(phase, transport, nth, after)
        if point not in seen:
            seen.add(point)
            points.append(point)
    return points


POINT_LIST = kill_points(SEED, POINTS)


def test_the_sweep_covers_every_phase_and_enough_points():
    assert len({p.name for p in POINT_LIST}) == POINTS >= 30
    assert {p.phase for p in POINT_LIST} == {
        "load",
        "removals",
        "additions",
        "propagation",
        "publish",
    }
    assert {(p.phase, p.after) for p in POINT_LIST if p.phase == "publish"} == {
        ("publish", False),
        ("publish", True),
    }
    assert kill_points(SEED, POINTS) == POINT_LIST  # deterministic


# --- the shared day-1 state ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep_emulator() -> Iterator[FcmEmulator]:
    with FcmEmulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def day1_template(pg_server_url: str, template_db: str, sweep_emulator, tmp_path_factory):
    """A database holding days 0 and 1 as the CLI left them, a day ago, to clone per case."""
    name, url = create_database(pg_server_url, template_db, prefix="sweep_day1")
    work = tmp_path_factory.mktemp("sweep")
    message = work / "message.json"
    message.write_text(json.dumps({"notification": {"title": "Jobs for {date}", "body": "x"}}))
    sweep_emulator.reset()
    for day, audience in ((DAY0, DAY0_AUDIENCE), (DAY1, DAY1_AUDIENCE)):
        path = write_lines(work / f"{day}.txt", audience)
        # Day 1's audience replaces day 0's (so the cost policy puts it on an unused topic):
        # the audience guard would refuse that change, which this setup means.
        args = run_args(
            day,
            path,
            message,
            prefix=PREFIX,
            pool_size=POOL,
            policy=(),
            extra=("--allow-large-churn",),
        )
        done = run_cli(*args, env=cli_env(url, sweep_emulator))
        assert done.returncode == 0, describe(done)
    assert sweep_emulator.members(TOPIC) == set(DAY1_AUDIENCE)
    assert sweep_emulator.members(OTHER) == set(DAY0_AUDIENCE)
    engine = create_engine(url)
    try:
        a_day_passes(engine)  # both topics have rested by day 2
    finally:
        engine.dispose()
    yield name, message
    drop_database(pg_server_url, name)


@pytest.fixture
def case(pg_server_url, day1_template, sweep_emulator):
    """A fresh database at day 1, and the emulator holding exactly day 1's members."""
    template, message = day1_template
    name, url = create_database(pg_server_url, template, prefix="sweep")
    sweep_emulator.reset()
    for token in DAY1_AUDIENCE:
        sweep_emulator.subscribe_direct(token, TOPIC)
    for token in DAY0_AUDIENCE:
        sweep_emulator.subscribe_direct(token, OTHER)
    for token in DEAD:
        sweep_emulator.unregister(token)
    sweep_emulator.set_latency(0.001)  # so a run takes long enough to be cut anywhere
    yield url, message
    drop_database(pg_server_url, name)


# --- killing ---------------------------------------------------------------------------------


def wait_for_backends_to_go(url: str) -> None:
    """After a SIGKILL, PostgreSQL ends the dead client's sessions (and its lock) on its own;
    wait for that to be visible rather than for a fixed time."""
    engine = create_engine(url)
    try:
        for _ in range(2000):
            with engine.connect() as conn:
                left = conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND application_name = 'topic-sync'"
                    )
                )
            if not left:
                return
            threading.Event().wait(0.01)
        raise AssertionError("the killed run's database sessions did not end")
    finally:
        engine.dispose()


def killed_run(point: KillPoint, args: list[str], env, emulator, fifo: Path | None) -> int:
    """Start the run, kill it at the point, return its exit status (-9 when killed there)."""
    pid: list[int] = []

    def kill() -> None:
        os.kill(pid[0], signal.SIGKILL)

    legacy = point.transport == "legacy-iid"
    kinds = {
        "removals": "batchRemove" if legacy else "unsubscribe",
        "additions": "batchAdd" if legacy else "subscribe",
        "publish": "send",  # the first send is the validation; the publish is the second
    }
    if point.phase in kinds:
        nth = 2 if point.phase == "publish" else point.nth
        emulator.add_trap(kinds[point.phase], nth, kill, after=point.after)
    proc = subprocess.Popen(
        cli_command(*args),
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid.append(proc.pid)
    if point.phase == "load":
        assert fifo is not None

        def feed() -> None:
            with open(fifo, "w") as pipe:  # blocks until the run opens the audience
                lines = (DAY2_AUDIENCE * 10)[: point.nth]  # duplicates are fine: merged
                pipe.write("".join(f"{t}\n" for t in lines))
                pipe.flush()
                kill()  # mid-COPY: the plan's transaction is open, the file unfinished

        threading.Thread(target=feed, daemon=True).start()
    elif point.phase == "propagation":
        assert proc.stderr is not None
        for line in proc.stderr:
            if "for subscriptions to propagate" in line:
                kill()
                break
    try:
        proc.communicate(timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode


@pytest.mark.heavy  # two or three CLI runs per point
@pytest.mark.parametrize("point", POINT_LIST, ids=lambda p: p.name)
def test_killed_at_any_point_then_rerun_reaches_exactly_the_audience_once(
    point: KillPoint, case, sweep_emulator, tmp_path
):
    url, message = case
    env = cli_env(url, sweep_emulator)
    audience = write_lines(tmp_path / "day2.txt", DAY2_AUDIENCE)
    extra = ("--propagation-delay", PROPAGATION) if point.phase == "propagation" else ()
    fifo = None
    first_audience = audience
    if point.phase == "load":
        fifo = tmp_path / "day2.fifo"
        os.mkfifo(fifo)
        first_audience = fifo

    def args(path: Path, *more: str) -> list[str]:
        built = run_args(
            DAY2, path, message, prefix=PREFIX, pool_size=POOL, transport=point.transport, policy=()
        )
        if extra:  # replace run_args' own --propagation-delay 0
            at = built.index("--propagation-delay")
            built[at + 1] = PROPAGATION
        return [*built, *more]

    status = killed_run(point, args(first_audience), env, sweep_emulator, fifo)
    assert status == -signal.SIGKILL, f"{point.name}: the run was not killed at its point"
    wait_for_backends_to_go(url)
    sweep_emulator.set_latency(0)
    recorded = day2_topic(url)
    assert recorded in (None, TOPIC), point.name  # None: killed before the plan committed

    rerun = run_cli(*args(audience), env=env)
    if rerun.returncode == 4 and "--republish" in rerun.stderr:
        # The run died between recording its intent and hearing FCM's answer. An operator
        # checks FCM (here, the emulator's record): resend only if nothing went out.
        assert point.phase == "publish", describe(rerun)
        went_out = bool(publishes_to(sweep_emulator, TOPIC))
        assert went_out == point.after, describe(rerun)
        decision = "--mark-published" if went_out else "--republish"
        rerun = run_cli(*args(audience, decision), env=env)
    assert rerun.returncode == 0, f"{point.name}\n{describe(rerun)}"

    sent = publishes_to(sweep_emulator, TOPIC)
    assert len(sent) == 1, f"{point.name}: {len(sent)} publishes for {DAY2}"
    assert sent[0].recipients == EXPECTED, point.name
    assert sweep_emulator.members(TOPIC) == EXPECTED
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            owed = conn.scalar(
                text("SELECT count(*) FROM subscriptions WHERE status LIKE 'pending%'")
            )
            published = conn.execute(
                text("SELECT publish_state, status FROM runs WHERE run_date = :d"), {"d": DAY2}
            ).one()
    finally:
        engine.dispose()
    assert owed == 0
    assert tuple(published) == ("sent", "published")
    assert day2_topic(url) == TOPIC
    assert publishes_to(sweep_emulator, OTHER) == []
    assert sweep_emulator.members(OTHER) == set(DAY0_AUDIENCE)


def day2_topic(url: str) -> str | None:
    """The topic day 2's run recorded, if its plan committed."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(text("SELECT topic FROM runs WHERE run_date = :d"), {"d": DAY2})
    finally:
        engine.dispose()
