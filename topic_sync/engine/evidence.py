"""The last resort for a publish FCM accepted that the database could not record.

The send is the one irreversible step. When FCM has answered with a message id, the run
logs it at once, then records it, retrying on new connections across a database blip. If
the database stays out of reach, the run writes the evidence to a file in the state folder
(atomically, synced) before it exits: the message went out, with this id, for this very
intent (its time stamp in the run's row). The next live run of the campaign on this host
records it in the database and removes the file; `status` shows it meanwhile. Nobody has
to guess between `--mark-published` and `--republish`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import Engine

from topic_sync import store
from topic_sync.fcm.target import FcmTarget

__all__ = ["PublishEvidence", "pending", "record_pending", "write"]

KIND = "topic-sync unconfirmed publish"
VERSION = 1
FOLDER = "unconfirmed-publishes"


@dataclass(frozen=True)
class PublishEvidence:
    """FCM accepted this run's publish (its intent stamped at `intent_at`) as `message_id`."""

    project_id: str
    endpoint: str
    campaign: str
    campaign_id: int
    run_id: int
    date: str
    topic: str
    message_id: str
    intent_at: str  # ISO 8601, as the database stamped the intent
    accepted_at: str

    @property
    def intent_time(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.intent_at)

    def is_for(self, target: FcmTarget) -> bool:
        return (self.project_id, self.endpoint) == (target.project_id, target.endpoint)


def _folder(state_dir: Path) -> Path:
    return state_dir / FOLDER


def write(state_dir: Path, evidence: PublishEvidence) -> Path:
    """Write the evidence durably: a temporary file synced, renamed, the folder synced."""
    folder = _folder(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"run-{evidence.run_id}-{evidence.date}.json"
    temporary = path.with_suffix(".tmp")
    document = {"kind": KIND, "version": VERSION, **asdict(evidence)}
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return path


def pending(state_dir: Path) -> list[tuple[Path, PublishEvidence]]:
    """The evidence files in the state folder (files that are not evidence are skipped)."""
    folder = _folder(state_dir)
    if not folder.is_dir():
        return []
    found = []
    names = set(PublishEvidence.__dataclass_fields__)
    for path in sorted(folder.glob("run-*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            if document.get("kind") != KIND:
                continue
            found.append((path, PublishEvidence(**{k: document[k] for k in names})))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def record_pending(
    engine: Engine,
    target: FcmTarget,
    state_dir: Path,
    campaign_id: int,
    log: Callable[[str], None],
) -> list[PublishEvidence]:
    """Record in the database the publishes of this campaign that evidence files prove, and
    remove those files; returns what was recorded. Evidence of another target or another
    database (no intent of that time stamp) is left alone."""
    recorded = []
    for path, evidence in pending(state_dir):
        if evidence.campaign_id != campaign_id or not evidence.is_for(target):
            continue
        with engine.begin() as conn:
            done = store.confirm_recorded_publish(
                conn,
                evidence.run_id,
                evidence.intent_time,
                evidence.message_id,
                note=f"recorded from the evidence file {path.name}: FCM accepted it at "
                f"{evidence.accepted_at}, the database could not record it then",
            )
            run = store.get_run(conn, campaign_id, dt.date.fromisoformat(evidence.date))
        settled = run is not None and run.id == evidence.run_id and run.publish_state == "sent"
        if done or settled:
            log(
                f"{evidence.date}: recorded the publish FCM accepted as {evidence.message_id} "
                f"(evidence file {path})"
            )
            recorded.append(evidence)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return recorded
