"""The faults a test can inject: per-token errors, whole-request errors, strange answers (see
``shapes``), quota, latency, traps, and a Firebase Cloud Messaging API that is not enabled for
the project.

Why it exists: FCM's per-token errors, failed requests and rate limits cannot be provoked on
demand against Google, so these are the knobs tests turn. Each setter checks its arguments;
each ``take_*`` method is called as a request meets the fault and uses it up. Plain data, no
HTTP (how a fault travels is in ``replies``). Not thread-safe by itself: the emulator's one lock
guards every use, except that a request reads ``latency`` without it as it arrives.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from topic_sync.emulator.quota import Quota
from topic_sync.emulator.replies import REQUEST_ERROR_STATUS, Reply
from topic_sync.emulator.routes import KINDS
from topic_sync.emulator.shapes import Canned, Request, build, check_shape

OPS = ("subscribe", "unsubscribe", "both")
"""What a per-token fault applies to."""


@dataclass
class TokenFault:
    reason: str
    op: str
    remaining: int | None  # None: until cleared


@dataclass
class RequestFaults:
    """Whole-request errors armed by inject_request_errors."""

    status: int
    count: int | None
    rate: float | None
    retry_after: int | None
    rng: random.Random
    kinds: frozenset[str] | None  # None: every kind of FCM request
    served: bool  # the request is served first, then answered with the error


class RequestError(NamedTuple):
    """What one request met: answer ``status`` (with ``retry_after``), after serving or not."""

    status: int
    retry_after: int | None
    served: bool


@dataclass
class AnswerFault:
    """A strange answer armed by inject_answer: a named shape or a canned answer."""

    answer: str | Canned
    status: int | None  # overrides a named shape's own status
    kinds: frozenset[str] | None  # None: every kind of FCM request
    tokens: frozenset[str] | None  # None: whatever tokens the request carries
    remaining: int | None  # None: until cleared
    served: bool  # the request is served first, then answered strangely

    def meets(self, kind: str, tokens: list[str]) -> bool:
        return (self.kinds is None or kind in self.kinds) and (
            self.tokens is None or not self.tokens.isdisjoint(tokens)
        )

    def reply(self, request: Request) -> Reply:
        if isinstance(self.answer, Canned):
            return self.answer.reply()
        return build(self.answer, request, self.status)


@dataclass
class Trap:
    """Call ``action`` at the ``nth`` request of ``kind``, before or after serving it."""

    kind: str
    remaining: int
    action: Callable[[], object]
    after: bool


class Faults:
    """Every armed fault; clear() disarms them all."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.token_faults: dict[str, list[TokenFault]] = {}  # newest first
        self.request_faults: RequestFaults | None = None
        self.answer_faults: list[AnswerFault] = []  # newest first
        self.quota: Quota | None = None
        self.latency = 0.0
        self.traps: list[Trap] = []
        self.api_disabled = False

    # ----------------------------------------------------------------- arming

    def inject_token_error(self, token: str, reason: str, op: str, times: int | None) -> None:
        """See FcmEmulator.inject_token_error."""
        if not isinstance(reason, str) or not reason:
            raise ValueError("reason must be a non-empty string")
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError("times must be None or a positive integer")
        self.token_faults.setdefault(token, []).insert(0, TokenFault(reason, op, times))

    def inject_request_errors(
        self,
        status: int,
        *,
        count: int | None,
        rate: float | None,
        retry_after: float | None,
        seed: int,
        kinds: Iterable[str] | None,
        served: bool,
    ) -> None:
        """See FcmEmulator.inject_request_errors."""
        kind_set = None if kinds is None else frozenset(kinds)
        if kind_set is not None and not kind_set <= KINDS:
            raise ValueError(f"kinds must be among {sorted(KINDS)}")
        if status not in REQUEST_ERROR_STATUS:
            raise ValueError(f"status must be one of {sorted(REQUEST_ERROR_STATUS)}")
        if count is not None and (not isinstance(count, int) or count < 0):
            raise ValueError("count must be None or a non-negative integer")
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must not be negative")
        after = None if retry_after is None else math.ceil(retry_after)
        self.request_faults = RequestFaults(
            status, count, rate, after, random.Random(seed), kind_set, served
        )

    def clear_request_errors(self) -> None:
        self.request_faults = None

    def inject_answer(
        self,
        answer: str | Canned,
        *,
        status: int | None,
        kinds: Iterable[str] | None,
        tokens: Iterable[str] | None,
        count: int | None,
        served: bool,
    ) -> None:
        """See FcmEmulator.inject_answer."""
        kind_set = None if kinds is None else frozenset(kinds)
        if kind_set is not None and not kind_set <= KINDS:
            raise ValueError(f"kinds must be among {sorted(KINDS)}")
        if isinstance(answer, str):
            check_shape(answer, kind_set)
        elif not isinstance(answer, Canned):
            raise ValueError("answer must be a shape name or a Canned answer")
        elif status is not None:
            raise ValueError("status goes with a named shape; a Canned answer has its own")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status (100-599)")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be None or a positive integer")
        token_set = None if tokens is None else frozenset(tokens)
        self.answer_faults.insert(
            0, AnswerFault(answer, status, kind_set, token_set, count, served)
        )

    def clear_answers(self) -> None:
        self.answer_faults = []

    def add_trap(self, kind: str, nth: int, action: Callable[[], object], after: bool) -> None:
        """See FcmEmulator.add_trap."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}")
        if nth < 1:
            raise ValueError("nth must be at least 1")
        self.traps.append(Trap(kind, nth, action, after))

    def set_quota(
        self,
        requests_per_second: float | None,
        *,
        window: str,
        retry_after: float | None,
        retry_delay: float | None,
    ) -> None:
        """See FcmEmulator.set_quota."""
        self.quota = (
            None
            if requests_per_second is None
            else Quota.of(
                requests_per_second,
                window=window,
                retry_after=retry_after,
                retry_delay=retry_delay,
            )
        )

    def set_api_disabled(self, disabled: bool) -> None:
        """See FcmEmulator.set_api_disabled."""
        if not isinstance(disabled, bool):
            raise ValueError("api_disabled must be true or false")
        self.api_disabled = disabled

    def set_latency(self, seconds: float) -> None:
        """See FcmEmulator.set_latency."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self.latency = float(seconds)

    # ----------------------------------------------------------------- meeting a request

    def take_token_fault(self, token: str, op: str) -> str | None:
        """The reason the newest fault for ``op`` on ``token`` fails it with, using it up."""
        faults = self.token_faults.get(token)
        if faults:
            for fault in faults:
                if fault.op == op or fault.op == "both":
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            faults.remove(fault)
                            if not faults:
                                del self.token_faults[token]
                    return fault.reason
        return None

    def take_trap(self, kind: str) -> Trap | None:
        """Count a request of ``kind`` against every trap for it; the trap it springs, if any."""
        for trap in self.traps:
            if trap.kind == kind:
                trap.remaining -= 1
                if trap.remaining == 0:
                    self.traps.remove(trap)
                    return trap
        return None

    def take_request_error(self, kind: str) -> RequestError | None:
        """The whole-request error this request of ``kind`` meets, if one is armed for it."""
        rf = self.request_faults
        if rf is None or (rf.kinds is not None and kind not in rf.kinds):
            return None
        if rf.count is not None and rf.count <= 0:
            self.request_faults = None
            return None
        if rf.rate is not None and rf.rng.random() >= rf.rate:
            return None
        if rf.count is not None:
            rf.count -= 1
        return RequestError(rf.status, rf.retry_after, rf.served)

    def take_answer(self, kind: str, tokens: list[str]) -> AnswerFault | None:
        """The newest strange answer armed for this request, used up by one."""
        for fault in self.answer_faults:
            if fault.meets(kind, tokens):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.answer_faults.remove(fault)
                return fault
        return None

    def take_quota(
        self, cost: float, *, legacy: bool = False, arrived: float | None = None
    ) -> Reply | None:
        """Charge ``cost`` requests that ``arrived`` then (``time.monotonic()``; None: now)
        against the quota: None, or the 429 if it is used up."""
        if self.quota is None or self.quota.limiter.take(cost, arrived):
            return None
        return self.quota.refusal(legacy=legacy)
