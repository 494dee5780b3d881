"""Retention: delete per-token failure rows past their time, in bounded batches.

What is kept, whatever its age: every run summary (`runs`), the subscription table and the
tokens with their dead and forgotten marks (the state runs, reruns and reconcile read),
the failures of each campaign's latest run, and unresolved failures of work still owed.
Only report reads `token_failures`; the rest of it is history, deleted `batch` rows per
transaction so no lock is held for long and runs can go on meanwhile.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from topic_sync import store

PURGE_BATCH = 5000  # rows per transaction


@dataclass(frozen=True)
class PurgeResult:
    live: bool
    cutoff: dt.datetime
    failures: int  # deleted, or (dry run) that would be
    batches: int

    def summary(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "cutoff": self.cutoff.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "failures": self.failures,
            "batches": self.batches,
        }


def purge(
    engine: Engine,
    *,
    older_than: float,
    live: bool,
    now: dt.datetime,
    batch: int = PURGE_BATCH,
    should_stop: Callable[[], bool] = lambda: False,
) -> PurgeResult:
    """Delete (with `live`; else count) failure rows last seen more than `older_than`
    seconds before `now`. Stops between batches when asked; a rerun continues."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    cutoff = now - dt.timedelta(seconds=older_than)
    if not live:
        with engine.connect() as conn:
            return PurgeResult(False, cutoff, store.purgeable_failures(conn, cutoff), 0)
    deleted = batches = 0
    while not should_stop():
        with engine.begin() as conn:
            done = store.purge_failures(conn, cutoff, batch)
        deleted += done
        batches += 1
        if done < batch:
            break
    return PurgeResult(True, cutoff, deleted, batches)
