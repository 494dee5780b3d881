"""The engine's shared types: what the CLI, the application layer and the engine's modules
all pass around (the outside world a command runs in, progress, phase timings, run tallies),
kept apart from the drainer so that using them does not mean importing it."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import Engine

from topic_sync.fcm.client import FcmClient
from topic_sync.fcm.pacer import Pacer
from topic_sync.states import Op


@dataclass(frozen=True)
class Progress:
    """Where a sync phase stands, for a progress bar or a log line."""

    op: Op
    done: int
    total: int
    failed: int
    started: float  # monotonic clock


@dataclass
class Deps:
    """What the engine needs from the outside world, passed in for testability."""

    engine: Engine
    client: FcmClient
    sleep: Callable[[float], None]
    now: Callable[[], dt.datetime]
    log: Callable[[str], None] = lambda _msg: None
    pacer: Pacer | None = None
    monotonic: Callable[[], float] = time.monotonic
    progress: Callable[[Progress], None] = lambda _p: None
    # True once a shutdown was asked for: workers stop after their current batch.
    should_stop: Callable[[], bool] = lambda: False
    # Told the day's topic once a run chose it (the CLI's JSON log lines then carry it).
    topic_chosen: Callable[[str], None] = lambda _topic: None
    # Told, as a live run's plan begins, how many topic requests it will likely send (None:
    # not known): the transport may open its connections while the plan is made.
    warm_up: Callable[[int | None], None] = lambda _requests: None


@dataclass
class Phases:
    """Seconds spent per phase of a run (load, plan, removals, additions, publish, ...)."""

    clock: Callable[[], float]
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timing(self, name: str) -> Iterator[None]:
        started = self.clock()
        try:
            yield
        finally:
            self.add(name, self.clock() - started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


@dataclass
class SyncCounts:
    """What a command's sync did. A run's counts are read from its runs row, the one record
    of them, with the failed attempts per (op, code) that the row does not keep, counted by
    the drainer; a repair has no row, so the drainer tallies all of them here (drain.Work)."""

    added: int = 0
    removed: int = 0
    attempts: int = 0  # token attempts, every try counted
    retries: int = 0  # token attempts that were retries
    wait_seconds: float = 0.0
    newly_dead: int = 0  # tokens FCM answered "dead" for, marked as such
    outcomes: Counter[str] = field(default_factory=Counter)  # per attempt: "ok" or error code
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # failed, by (op, code)
