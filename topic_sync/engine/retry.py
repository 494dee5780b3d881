"""The one retry policy: how long to wait before retrying, and how often.

Used both when a whole request fails and when the tokens whose per-token
outcome is retryable are re-batched. Defaults follow FCM's guidance:
exponential backoff from 60 s up to 60 min, at most 4 retries (as
firebase-admin-java does), and a `Retry-After` header is never cut short.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import tenacity

DEFAULT_MIN_WAIT = 60.0
DEFAULT_MAX_WAIT = 3600.0
DEFAULT_MAX_RETRIES = 4


@dataclass(frozen=True)
class _Attempt:
    """The part of tenacity's RetryCallState its wait strategies read."""

    attempt_number: int


@dataclass(frozen=True)
class RetryPolicy:
    min_wait: float = DEFAULT_MIN_WAIT
    max_wait: float = DEFAULT_MAX_WAIT
    max_retries: int = DEFAULT_MAX_RETRIES
    jitter: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_wait) and math.isfinite(self.max_wait)):
            raise ValueError("retry waits must be finite numbers of seconds")
        if self.min_wait < 0 or self.max_wait < self.min_wait:
            raise ValueError("retry waits must satisfy 0 <= min-wait <= max-wait")
        if self.max_retries < 0:
            raise ValueError("max retries must be 0 or more")

    def _strategy(self) -> tenacity.wait.wait_base:
        base = tenacity.wait_exponential(multiplier=self.min_wait, max=self.max_wait)
        if not self.jitter or self.min_wait == 0:
            return base
        # Up to 10% extra, so that many workers do not retry in lockstep.
        return base + tenacity.wait_random(0, self.min_wait * 0.1)

    def wait(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry_number` (1-based)."""
        if retry_number < 1:
            return 0.0
        # The exponential part is capped at max_wait; the jitter comes on top, so that
        # workers that all reached the cap still do not retry at the same instant.
        seconds = self._strategy()(_Attempt(retry_number))
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
