"""The one retry policy: how long to wait before retrying, and how often.

Used both when a whole request fails and when the tokens whose per-token
outcome is retryable are re-batched. Defaults follow FCM's guidance:
exponential backoff from 60 s up to 60 min, at most 4 retries (as
firebase-admin-java does), and a `Retry-After` header is never cut short.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import tenacity


@dataclass(frozen=True)
class RetryPolicy:
    min_wait: float
    max_wait: float
    max_retries: int
    jitter: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_wait) and math.isfinite(self.max_wait)):
            raise ValueError("retry waits must be finite numbers of seconds")
        if self.min_wait < 0 or self.max_wait < self.min_wait:
            raise ValueError("retry waits must satisfy 0 <= min-wait <= max-wait")
        if self.max_retries < 0:
            raise ValueError("max retries must be 0 or more")

    def wait(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry_number` (1-based).

        min-wait x 2^(retry-1), capped at max-wait; then up to 10% of min-wait on top, so
        that many workers (even those at the cap) do not retry in lockstep; never less than
        a Retry-After.
        """
        if retry_number < 1:
            return 0.0
        seconds = min(self.max_wait, self.min_wait * 2.0 ** min(retry_number - 1, 64))
        if self.jitter and self.min_wait:
            seconds += random.random() * self.min_wait * 0.1
        if retry_after is not None:
            seconds = max(seconds, retry_after)
        return seconds

    def retrying(
        self,
        retryable: Callable[[BaseException], bool],
        sleep: Callable[[float], None],
        retry_after: Callable[[BaseException], float | None] = lambda _e: None,
    ) -> tenacity.Retrying:
        """A tenacity loop for one whole request (e.g. a publish) under this policy."""

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return self.wait(state.attempt_number, retry_after(error) if error else None)

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(retryable),
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=wait,
            sleep=sleep,
            reraise=True,
        )
