"""The emulator's topic-management quota: how it counts, and what its 429 looks like.

Why it exists: FCM does not say how it enforces its quota nor what its 429 carries, and a
client that rides the quota must cope with every likely answer. So the quota comes in the
shapes a Google front end may have: a token bucket (a second's burst, then the rate) or a
sliding one-second window (at most `rate` in any second); its 429 with or without a
`Retry-After` header, with or without a `google.rpc.RetryInfo` detail. A request counts
against the quota when it arrives, as at FCM's front door: not when the emulator answers it
after its latency, when requests that arrived evenly may be handled bunched (their latency
ending together on a busy machine), which would make a window refuse peaks no client sent.
Not thread-safe by itself: the emulator's one lock guards every use.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import Any

from topic_sync.emulator.limits import RETRY_INFO_TYPE
from topic_sync.emulator.replies import JSON, Reply, dumps

WINDOWS = ("bucket", "sliding")
"""How the quota counts: a token bucket, or a sliding one-second window."""

MESSAGE = "Quota exceeded for topic management requests."


class Bucket:
    """Token bucket holding one second's worth of requests.

    A request costing more than the capacity (a legacy batch of 1000 at a lower rate) passes
    once the bucket is full and drives it negative, so big batches are slowed, not starved.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = rate
        self.level = rate
        self.last = time.monotonic()

    def take(self, cost: float, at: float | None = None) -> bool:
        """Charge `cost` requests that arrived `at` (time.monotonic(); None: now). Requests
        handled slightly out of their arrival order refill nothing for the earlier one."""
        now = time.monotonic() if at is None else at
        if now > self.last:
            self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
            self.last = now
        if self.level >= min(cost, self.capacity):
            self.level -= cost
            return True
        return False


class SlidingWindow:
    """At most `rate` requests let through in any one second (refused ones do not count).

    A request costing more than the rate (a legacy batch) passes into an empty window, so
    big batches are slowed, not starved.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.used = 0.0
        self.log: collections.deque[tuple[float, float]] = collections.deque()

    def take(self, cost: float, at: float | None = None) -> bool:
        """Charge `cost` requests that arrived `at` (time.monotonic(); None: now). The log
        stays in arrival order: a request handled after one that arrived later is filed
        before it (what was let through after it, within the second, counts too)."""
        now = time.monotonic() if at is None else at
        log = self.log
        while log and log[0][0] <= now - 1.0:
            self.used -= log.popleft()[1]
        if self.used + cost <= self.rate or not log:
            i = len(log)
            while i and log[i - 1][0] > now:
                i -= 1
            log.insert(i, (now, cost))
            self.used += cost
            return True
        return False


@dataclass
class Quota:
    """A quota and the shape of its refusals."""

    limiter: Bucket | SlidingWindow
    retry_after: int | None  # a Retry-After header on each 429 (whole seconds)
    retry_delay: float | None  # a RetryInfo detail on each 429 (seconds)

    @classmethod
    def of(
        cls,
        requests_per_second: float,
        *,
        window: str = "bucket",
        retry_after: float | None = None,
        retry_delay: float | None = None,
    ) -> Quota:
        """Check the arguments (see FcmEmulator.set_quota)."""
        if not requests_per_second > 0:
            raise ValueError("requests_per_second must be positive or None")
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}")
        for name, value in (("retry_after", retry_after), ("retry_delay", retry_delay)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number of seconds")
        rate = float(requests_per_second)
        limiter = Bucket(rate) if window == "bucket" else SlidingWindow(rate)
        after = None if retry_after is None else math.ceil(retry_after)
        return cls(limiter, after, retry_delay)

    def refusal(self, *, legacy: bool) -> Reply:
        """The 429 for a request over the quota: Google's error (the Instance ID API's bare
        status string on legacy batches), with the hints this quota gives."""
        headers = () if self.retry_after is None else (("Retry-After", str(self.retry_after)),)
        if legacy:
            return Reply(429, dumps({"error": "RESOURCE_EXHAUSTED"}), JSON, headers)
        error: dict[str, Any] = {"code": 429, "message": MESSAGE, "status": "RESOURCE_EXHAUSTED"}
        if self.retry_delay is not None:
            delay = f"{self.retry_delay:.3f}".rstrip("0").rstrip(".") + "s"
            error["details"] = [{"@type": RETRY_INFO_TYPE, "retryDelay": delay}]
        return Reply(429, dumps({"error": error}), JSON, headers)
