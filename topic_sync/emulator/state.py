"""What the fake FCM knows: subscriptions, dead tokens, and a record of sends and requests.

Why it exists: this is the truth tests check a client against (who is subscribed to what, who
an accepted send reached at that instant, which requests were answered how). It is plain data
with no HTTP and no faults, so the API handlers, the in-process inspection methods and the
control API all read and change the same thing. Not thread-safe by itself: the emulator's one
lock guards every use.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Publish:
    """One accepted send: who was subscribed at that instant is what a test checks."""

    message_id: str
    topic: str | None
    message: dict[str, Any]
    recipients: frozenset[str]
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "topic": self.topic,
            "message": self.message,
            "recipients": sorted(self.recipients),
            "at": self.at,
        }


VALIDATION_MESSAGE_ID = "fake_message_id"
"""What FCM names a validate_only send, which delivers nothing."""


def rfc3339(t: float) -> str:
    """A ``createTime`` as FCM writes it: UTC with microseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class FcmState:
    """Subscriptions both ways round, unregistered tokens, publishes, validations, stats."""

    def __init__(self) -> None:
        # Message ids stay unique across clear() and across emulator instances.
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self.clear()

    def clear(self) -> None:
        """Forget everything (but keep the message id sequence going)."""
        self.subs: dict[str, dict[str, str]] = {}  # token -> {topic: createTime}
        self.members: dict[str, set[str]] = {}  # topic -> tokens
        self.unregistered: set[str] = set()
        self.publishes: list[Publish] = []
        self.validations: list[Publish] = []
        self.stats: Counter[tuple[str, int]] = Counter()  # (request kind, HTTP status) -> n

    # ----------------------------------------------------------------- subscriptions

    def is_subscribed(self, token: str, topic: str) -> bool:
        return topic in self.subs.get(token, {})

    def add(self, token: str, topic: str, now: float) -> str:
        """Subscribe ``token`` to ``topic`` as of ``now``; returns the ``createTime``."""
        created = rfc3339(now)
        self.subs.setdefault(token, {})[topic] = created
        self.members.setdefault(topic, set()).add(token)
        return created

    def remove(self, token: str, topic: str) -> bool:
        """Unsubscribe; False if ``token`` was not subscribed to ``topic``."""
        topics = self.subs.get(token)
        if topics is None or topic not in topics:
            return False
        del topics[topic]
        if not topics:
            del self.subs[token]
        self._discard_member(topic, token)
        return True

    def unregister(self, token: str) -> None:
        """Kill a token: its subscriptions go, and it stays dead until clear()."""
        self.unregistered.add(token)
        for topic in self.subs.pop(token, {}):
            self._discard_member(topic, token)

    def _discard_member(self, topic: str, token: str) -> None:
        tokens = self.members.get(topic)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self.members[topic]

    # ----------------------------------------------------------------- sends

    def record_send(
        self,
        topic: str | None,
        message: dict[str, Any],
        recipients: frozenset[str],
        *,
        validate_only: bool,
    ) -> str:
        """Record an accepted send and return its message id.

        validate_only sends are kept apart so they can never be mistaken for a publish, and
        take no id from the sequence.
        """
        if validate_only:
            self.validations.append(
                Publish(VALIDATION_MESSAGE_ID, topic, message, recipients, time.time())
            )
            return VALIDATION_MESSAGE_ID
        message_id = f"0:{self._id_prefix}{next(self._ids):012d}"
        self.publishes.append(Publish(message_id, topic, message, recipients, time.time()))
        return message_id

    # ----------------------------------------------------------------- inspection

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready snapshot, as served by ``GET /emulator/state``."""
        stats: dict[str, dict[str, int]] = {}
        for (kind, status), n in sorted(self.stats.items()):
            stats.setdefault(kind, {})[str(status)] = n
        return {
            "topics": {t: sorted(m) for t, m in sorted(self.members.items())},
            "publishes": [p.to_json() for p in self.publishes],
            "validations": len(self.validations),
            "unregistered": sorted(self.unregistered),
            "stats": stats,
        }
