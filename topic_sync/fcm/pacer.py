"""One pacer shared by every worker and every HTTP request to FCM.

FCM's topic-management quota (3,000 requests per second per project, per the
docs) is counted per token on the v1 API, where one token is one request, so
pacing is done per request at the HTTP layer, beneath firebase-admin's thread
fan-out. When FCM answers 429 the pace halves; it climbs back gradually after.
A `Retry-After` answer holds every request until it has passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from topic_sync.settings import DEFAULTS

BURST_SECONDS = 0.05  # how much unused pace may be spent at once
DECREASE_FACTOR = 0.5
DECREASE_EVERY = 1.0  # seconds: a burst of 429s from one moment halves the pace once
RECOVER_EVERY = 1.0  # seconds between steps back up
RECOVER_STEP = 0.05  # share of the configured rate regained per step


class Pacer:
    def __init__(
        self,
        rate: float | None = DEFAULTS.rate_limit,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for no limit)")
        self.max_rate = rate
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_free = clock()
        self._not_before = 0.0
        self._last_change = clock()  # last step of the pace, either way
        self._last_decrease = float("-inf")
        self.throttled = 0  # 429 answers seen
        self.waited = 0.0  # seconds requests spent held back

    def acquire(self, cost: float = 1.0) -> float:
        """Block until `cost` requests may go out; returns the seconds waited."""
        waited = self.try_acquire(cost, None)
        assert waited is not None
        return waited

    def try_acquire(self, cost: float, not_after: float | None) -> float | None:
        """Like acquire, but give up (None, nothing reserved) if the requests could not go out
        by `not_after` (the clock's time): a batch must end by its deadline."""
        with self._lock:
            now = self._clock()
            start = max(now, self._not_before)
            if self.rate is not None:
                self._recover(now)
                start = max(start, self._next_free)
            if not_after is not None and start > not_after:
                return None
            if self.rate is not None:
                self._next_free = max(self._next_free, now - BURST_SECONDS) + cost / self.rate
            wait = start - now
            self.waited += max(wait, 0.0)
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def observe(self, status: int, retry_after: float | None = None) -> None:
        """Learn from an answer: slow down on 429, hold everything on Retry-After."""
        with self._lock:
            now = self._clock()
            if retry_after is not None and retry_after > 0:
                self._not_before = max(self._not_before, now + retry_after)
            if status != 429:
                return
            self.throttled += 1
            if self.rate is not None and now - self._last_decrease >= DECREASE_EVERY:
                self.rate = max(self.rate * DECREASE_FACTOR, 1.0)
                self._last_change = self._last_decrease = now

    def hold_remaining(self) -> float:
        """Seconds until the latest Retry-After has passed (0 if none is pending)."""
        with self._lock:
            return max(0.0, self._not_before - self._clock())

    def _recover(self, now: float) -> None:
        assert self.max_rate is not None and self.rate is not None
        if self.rate < self.max_rate and now - self._last_change >= RECOVER_EVERY:
            self.rate = min(self.max_rate, self.rate + self.max_rate * RECOVER_STEP)
            self._last_change = now
