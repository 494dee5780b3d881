"""Which FCM a database's state belongs to, and refusing to mix two.

Subscription rows, dead-token marks and publish records are facts about one Firebase
project at one endpoint. A rehearsal against the emulator with the production
DATABASE_URL would otherwise poison production: "already published" without a send,
or "0 to add" and a publish to an empty topic. So the state is bound to the target
of its first live command, and every command checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from topic_sync import store
from topic_sync.errors import TargetMismatch
from topic_sync.fcm.target import FcmTarget


def bound_target(conn: Connection) -> FcmTarget | None:
    bound = store.bound_target(conn)
    return FcmTarget(*bound) if bound else None


def check_target(conn: Connection, target: FcmTarget, *, bind: bool) -> None:
    """Refuse state that belongs to another target; bind unbound state when `bind`."""
    bound = store.bound_target(conn, lock=True)
    if bound is None:
        if bind:
            store.bind_target(conn, target.project_id, target.endpoint)
        return
    if bound != (target.project_id, target.endpoint):
        raise TargetMismatch(
            f"this database's subscription state belongs to {FcmTarget(*bound)}, but this "
            f"command talks to {target}. Using one for the other would publish to the wrong "
            "members or skip work. Use the database of that target; if the state really is "
            "this target's, 'topic-sync target bind'; to start over for this target, "
            "'topic-sync target reset'"
        )


@dataclass(frozen=True)
class TargetChange:
    """What `target bind` or `target reset` did (or, in a dry run, would do)."""

    before: FcmTarget | None
    after: FcmTarget
    live: bool
    reset: bool
    cleared: dict[str, int]  # what a reset deletes or clears, per kind


def rebind(engine: Engine, target: FcmTarget, *, live: bool) -> TargetChange:
    """Declare the state to be `target`'s (same devices, a renamed endpoint, ...)."""
    with engine.begin() as conn:
        before = bound_target(conn)
        if live:
            store.bind_target(conn, target.project_id, target.endpoint)
    return TargetChange(before, target, live, reset=False, cleared={})


def reset(engine: Engine, target: FcmTarget, *, live: bool) -> TargetChange:
    """Forget everything the state says about FCM and bind it to `target`.

    Tokens and their forgotten marks stay (an opt-out is the user's, whatever the target);
    subscriptions, publish records, failures, fences and dead marks go.
    """
    with engine.begin() as conn:
        before = bound_target(conn)
        cleared = store.target_state_counts(conn)
        if live:
            store.reset_target_state(conn)
            store.bind_target(conn, target.project_id, target.endpoint)
    return TargetChange(before, target, live, reset=True, cleared=cleared)
