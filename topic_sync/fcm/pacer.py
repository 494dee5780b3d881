"""One pacer shared by every worker and every HTTP request to FCM: it finds FCM's quota
and holds just under it.

FCM's topic-management quota (3,000 requests per second per project, per the docs) is
counted per token on the v1 API, where one token is one request, so pacing is done per
request at the HTTP layer, beneath firebase-admin's thread fan-out (a legacy batch costs
its token count). The quota a project really has may be lower, and it is enforced as a
token bucket, so 429s come late and in bursts. The pacer therefore looks at short
intervals: when an interval saw 429s, the pace drops to what was actually sent, less the
share refused, less a margin (a multiplicative decrease sized by the evidence); after a
clean interval it climbs 1% a second (an additive probe, so a raised quota is found
again). Riding at the quota this way keeps 429s to a fraction of a percent. A
`Retry-After` answer holds every request until it has passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from topic_sync.settings import DEFAULTS

BURST_SECONDS = 0.05  # how much unused pace may be spent at once
INTERVAL = 0.25  # seconds: the pace is adjusted at least this often while answers come
# ...and sooner once an interval has this much evidence of 429s: overshooting a quota for a
# whole interval would cost hundreds of refused requests.
EARLY_REFUSED = 10.0
EARLY_AFTER = 0.02  # seconds: the shortest interval whose rate means anything
MARGIN = 0.95  # after 429s, the pace goes this far below what got through
CLIMB_PER_SECOND = 0.005  # after clean intervals, the pace rises by this share per second
MIN_RATE = 1.0
SLOW_START_RATE = 100.0  # requests per second to begin with (doubled every clean interval)
FLOOR_FACTOR = 0.25  # one adjustment never cuts the pace below a quarter of what it was
RETURN_SHARE = 0.5  # of the way back to just under the last measured quota, per interval
MIN_SAMPLE = 20.0  # answers: the smallest sample a refused share is measured over
NEAR = 0.98  # this close to just under the last measured quota, the pace probes above it


class Pacer:
    def __init__(
        self,
        rate: float | None = DEFAULTS.rate_limit,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        slow_start: bool = True,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for no limit)")
        self.max_rate = rate
        # Slow start: begin low and double each clean interval up to the configured rate, so
        # a quota far below it is met at twice its pace at most, not at the full rate with
        # every worker's requests in flight.
        self._starting = slow_start and rate is not None
        self.rate = min(rate, SLOW_START_RATE) if self._starting and rate is not None else rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_free = clock()
        self._not_before = 0.0
        self._interval_start = clock()
        self._sent = 0.0  # cost answered in the current interval
        self._refused = 0.0  # ...of which answered 429
        self._first_refused_at: float | None = None  # the interval's first 429
        self._through_since = 0.0  # cost that got through since then
        self._refused_since = 0.0  # cost refused since then
        self.ceiling: float | None = None  # the quota as last measured (after 429s)
        self._last_decrease = float("-inf")
        self.throttled = 0  # 429 answers seen
        self.answered = 0  # answers seen, 429s included
        self.waited = 0.0  # seconds requests spent held back

    def acquire(self, cost: float = 1.0) -> float:
        """Block until `cost` requests may go out; returns the seconds waited."""
        waited = self.try_acquire(cost, None)
        assert waited is not None
        return waited

    def try_acquire(self, cost: float, not_after: float | None) -> float | None:
        """Like acquire, but give up (None, nothing reserved) if the requests could not go out
        by `not_after` (the clock's time): a batch must end by its deadline."""
        wait = self.reserve(cost, not_after)
        if wait is not None and wait > 0:
            self._sleep(wait)
        return wait

    def reserve(self, cost: float, not_after: float | None) -> float | None:
        """Reserve `cost` requests' place in the pace without waiting: the seconds the caller
        must wait before sending them, or None (nothing reserved) if that is after
        `not_after`. For callers that wait their own way (an event loop)."""
        with self._lock:
            now = self._clock()
            self._adjust(now)
            start = max(now, self._not_before)
            if self.rate is not None:
                start = max(start, self._next_free)
            if not_after is not None and start > not_after:
                return None
            if self.rate is not None:
                if self._starting and self.max_rate is not None:
                    # While starting, the pace counts requests: a legacy batch (cost 1000)
                    # at the slow-start pace would book seconds ahead for the batches behind
                    # it, which the doubling pace never gives back. The configured rate
                    # still holds.
                    spacing = max(1.0 / self.rate, cost / self.max_rate)
                else:
                    spacing = cost / self.rate
                self._next_free = max(self._next_free, now - BURST_SECONDS) + spacing
            wait = max(start - now, 0.0)
            self.waited += wait
        return wait

    def observe(self, status: int, retry_after: float | None = None, cost: float = 1.0) -> None:
        """Learn from an answer: count it (and a 429) toward the interval's evidence, and hold
        everything on Retry-After."""
        with self._lock:
            now = self._clock()
            if retry_after is not None and retry_after > 0:
                self._not_before = max(self._not_before, now + retry_after)
            self.answered += 1
            self._sent += cost
            if status == 429:
                self.throttled += 1
                self._refused += cost
                if self._first_refused_at is None:
                    self._first_refused_at, self._through_since = now, 0.0
                    self._refused_since = 0.0
                self._refused_since += cost
            elif self._first_refused_at is not None:
                self._through_since += cost
            # Early only once per episode: the 429s that follow a decrease answer requests sent
            # before it, and must not decrease the pace again.
            settled = now - self._last_decrease >= INTERVAL
            early = settled and self._refused >= EARLY_REFUSED
            if early and self._first_refused_at is not None:
                early = now - self._first_refused_at >= EARLY_AFTER
            self._adjust(now, early=early)

    def hold_remaining(self) -> float:
        """Seconds until the latest Retry-After has passed (0 if none is pending)."""
        with self._lock:
            return max(0.0, self._not_before - self._clock())

    def _adjust(self, now: float, early: bool = False) -> None:
        """Close the interval if it is over, and move the pace on its evidence."""
        elapsed = now - self._interval_start
        if elapsed < (EARLY_AFTER if early else INTERVAL):
            return
        if self.rate is not None and self.max_rate is not None:
            if self._refused:
                # The share FCM refused since it began refusing, applied to what was really
                # sent (the configured pace may be far above it), is the quota as measured:
                # go below it, but never below FLOOR_FACTOR of what was sent at once (a
                # short interval can mismeasure).
                sent = self._sent / elapsed
                answered = self._through_since + self._refused_since
                # (A lone 429 at the end of an interval is a share of a sample, not of one.)
                share = self._refused_since / max(answered, MIN_SAMPLE)
                self.ceiling = max(sent * (1.0 - share), sent * FLOOR_FACTOR)
                self.rate = max(MIN_RATE, MARGIN * min(self.rate, self.ceiling))
                self._last_decrease, self._starting = now, False
            elif self._starting:
                self.rate = min(self.max_rate, self.rate * 2.0)
                self._starting = self.rate < self.max_rate
            elif self.ceiling is not None and self.rate < NEAR * MARGIN * self.ceiling:
                # Well below the last quota measured: go back toward it quickly (and, once
                # near, probe above it: the measure itself may have been low).
                gap = MARGIN * self.ceiling - self.rate
                self.rate = min(self.max_rate, self.rate + gap * RETURN_SHARE)
            else:
                self.rate = min(self.max_rate, self.rate * (1 + CLIMB_PER_SECOND * elapsed))
        self._interval_start, self._sent, self._refused = now, 0.0, 0.0
        self._first_refused_at, self._through_since, self._refused_since = None, 0.0, 0.0
