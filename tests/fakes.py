"""A reusable in-memory FCM for engine tests that do not need HTTP.

`ModelFcm` behaves as topic-sync must assume FCM behaves (idempotent calls, a dead token
dead for every topic and every call) and answers on the wire: each answer is an HTTP status
and body in the shapes the emulator uses, read by the same functions the transports use
(v1: fcm.answers.read_topic_answer; legacy: fcm.legacy_iid.legacy_result). Faults (per
token, per batch, strange shapes) and crashes before or after FCM served a call can be set
up. It satisfies fcm.client.FcmClient, so it goes where a transport goes (`Deps.client`).

The HTTP emulator stays for what needs the wire: the transports' contract tests and the
end-to-end tests.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from firebase_admin import messaging

from topic_sync.emulator.replies import Reply, error_reply, reason_reply
from topic_sync.emulator.shapes import Request, build
from topic_sync.fcm.answers import RawAnswer, TokenAnswer, read_topic_answer
from topic_sync.fcm.client import BatchResult
from topic_sync.fcm.error_table import all_reasons, classify
from topic_sync.fcm.legacy_iid import legacy_result
from topic_sync.fcm.sdk_bridge import topic_error_code
from topic_sync.fcm.target import FcmTarget

DEAD_REASONS = {r for r in all_reasons() if classify(r).marks_invalid}
ODD = "odd:"  # a fault whose "reason" is ODD + shape answers with that strange shape


class Crash(BaseException):
    """The process died: nothing after this point of the run happens."""


@dataclass
class TokenFault:
    op: str
    reason: str  # a raw reason, or ODD + a shape
    times: int
    applied: bool  # FCM did the work but answered the error (a retryable answer only)


def _raw(reply: Reply) -> RawAnswer:
    """An answer as a client reads it: a cut one has no body."""
    location = dict(reply.headers).get("Location")
    return RawAnswer(reply.status, reply.body if reply.cut is None else None, location)


def _odd(shape: str, kind: str, tokens: int) -> RawAnswer:
    return _raw(build(shape, Request(kind, tokens)))


@dataclass
class ModelFcm:
    """FCM as topic-sync must assume it behaves: idempotent calls, dead tokens stay dead."""

    transport: str = "v1"  # "v1" (one answer per token) or "legacy-iid" (one per batch)
    target: FcmTarget = FcmTarget("model-project", "emulator model")
    members: dict[str, set[str]] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    publishes: list[tuple[str, frozenset[str], str]] = field(default_factory=list)
    token_faults: dict[str, list[TokenFault]] = field(default_factory=dict)
    batch_faults: list[tuple[str, bool]] = field(default_factory=list)
    crash_at: tuple[int, bool] | None = None  # (call number, after FCM served it)
    calls: int = 0
    refused_today: set[str] = field(default_factory=set)  # last subscribe: TOO_MANY_TOPICS
    validations: list[str] = field(default_factory=list)  # the topics of validate_only sends

    def _crash(self, after: bool) -> None:
        if self.crash_at is not None and self.crash_at == (self.calls, after):
            self.crash_at = None
            raise Crash(f"killed {'after' if after else 'before'} call {self.calls}")

    def subscribe(self, tokens: Sequence[str], topic: str, **_kw: object) -> BatchResult:
        return self._manage(tokens, topic, "subscribe")

    def unsubscribe(self, tokens: Sequence[str], topic: str, **_kw: object) -> BatchResult:
        return self._manage(tokens, topic, "unsubscribe")

    def _apply(self, token: str, topic: str, op: str) -> str | None:
        if token in self.dead:
            return "UNREGISTERED"
        if op == "subscribe":
            self.members.setdefault(topic, set()).add(token)
            self.refused_today.discard(token)
        else:
            self.members.get(topic, set()).discard(token)
        return None

    def _one(self, token: str, topic: str, op: str) -> str | None:
        """The raw reason (or ODD + shape) FCM answers for one token, doing its work."""
        faults = self.token_faults.get(token, [])
        fault = next((f for f in faults if f.op == op), None)
        member = token in self.members.get(topic, set())
        if fault is None or (fault.reason == "TOO_MANY_TOPICS" and op == "subscribe" and member):
            # The topic limit only refuses a new subscription; a member is simply confirmed.
            return self._apply(token, topic, op)
        fault.times -= 1
        if fault.times == 0:
            faults.remove(fault)
        if fault.reason in DEAD_REASONS:
            self.dead.add(token)  # FCM forgets a dead token's subscriptions
            for held in self.members.values():
                held.discard(token)
        elif fault.reason == "TOO_MANY_TOPICS" and op == "subscribe":
            self.refused_today.add(token)
        elif fault.applied:
            self._apply(token, topic, op)
        return fault.reason

    def _wire(self, token: str, topic: str, op: str, was_member: bool) -> RawAnswer:
        """FCM's v1 answer for one token, as the emulator gives it."""
        reason = self._one(token, topic, op)
        if reason is not None and reason.startswith(ODD):
            return _odd(reason[len(ODD) :], op, 1)
        if reason is not None:
            return _raw(reason_reply(reason))
        if op == "unsubscribe":
            return RawAnswer(200, b"{}")
        if was_member:
            return _raw(error_reply(409, "ALREADY_EXISTS"))
        name = f"projects/model-project/registrations/{token}/topicSubscriptions/{topic}"
        body = {"name": name, "topicName": topic, "createTime": "2026-11-01T06:00:00.000000Z"}
        return RawAnswer(200, json.dumps(body).encode())

    def _manage(self, tokens: Sequence[str], topic: str, op: str) -> BatchResult:
        self.calls += 1
        self._crash(after=False)
        kind = (
            op if self.transport == "v1" else ("batchAdd" if op == "subscribe" else "batchRemove")
        )
        if self.batch_faults:
            reason, applied = self.batch_faults.pop(0)
            if applied:
                for token in tokens:
                    self._apply(token, topic, op)
            self._crash(after=True)
            if not reason.startswith(ODD):
                return BatchResult.whole(reason, len(tokens))
            answer = _odd(reason[len(ODD) :], kind, len(tokens))
            if self.transport != "v1":
                return legacy_result(answer, tokens)
            return BatchResult.of_answers([self._read(answer, op, topic) for _ in tokens])
        if self.transport == "v1":
            held = self.members.get(topic, set())
            wire = [self._wire(token, topic, op, token in held) for token in tokens]
            self._crash(after=True)
            return BatchResult.of_answers([self._read(answer, op, topic) for answer in wire])
        results = []
        for token in tokens:
            reason = self._one(token, topic, op)
            results.append({} if reason is None else {"error": reason})
        self._crash(after=True)
        return legacy_result(RawAnswer(200, json.dumps({"results": results}).encode()), tokens)

    @staticmethod
    def _read(answer: RawAnswer, op: str, topic: str) -> TokenAnswer:
        return read_topic_answer(
            answer, subscribe=op == "subscribe", topic=topic, error_code=topic_error_code
        )

    def publish(self, message: messaging.Message, *, validate_only: bool = False) -> str:
        if validate_only:
            self.validations.append(str(message.topic))
            return "validated"
        self.calls += 1
        self._crash(after=False)
        title = message.notification.title
        self.publishes.append(
            (message.topic, frozenset(self.members.get(message.topic, ())), title)
        )
        self._crash(after=True)
        return f"projects/model/messages/{len(self.publishes)}"

    def list_topics(self, token: str) -> set[str]:
        return {t for t, held in self.members.items() if token in held}

    def members_of(self, topic: str) -> set[str]:
        return set(self.members.get(topic, set()))

    def last_recipients(self, topic: str) -> frozenset[str]:
        """Who was subscribed when the last message to `topic` went out."""
        sent = [held for to, held, _title in self.publishes if to == topic]
        assert sent, f"nothing published to {topic}"
        return sent[-1]
