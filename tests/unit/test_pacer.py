"""The shared pacer, on a fake clock: no real waiting."""

from __future__ import annotations

import pytest

from topic_sync.fcm.pacer import DECREASE_FACTOR, Pacer


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def pacer(rate):
    t = FakeTime()
    return Pacer(rate, clock=t.clock, sleep=t.sleep), t


def test_paces_requests_to_the_rate() -> None:
    p, t = pacer(100.0)
    start = t.now
    for _ in range(1000):
        p.acquire()
    elapsed = t.now - start
    assert 9.9 <= elapsed <= 10.0  # 1000 requests at 100/s, minus the small burst


def test_cost_counts_tokens_of_a_batch() -> None:
    p, t = pacer(1000.0)
    start = t.now
    for _ in range(5):
        p.acquire(1000)  # five legacy batches of 1000 tokens
    assert t.now - start >= 3.9


def test_no_rate_means_no_waiting_but_retry_after_still_holds() -> None:
    p, t = pacer(None)
    for _ in range(10_000):
        assert p.acquire() == 0
    p.observe(503, retry_after=30)
    assert p.hold_remaining() == 30
    assert p.acquire() == 30
    assert p.hold_remaining() == 0


def test_429_halves_the_pace_once_per_moment_then_recovers() -> None:
    p, t = pacer(3000.0)
    for _ in range(50):  # a burst of 429s from many workers at once
        p.observe(429)
    assert p.rate == 3000.0 * DECREASE_FACTOR
    assert p.throttled == 50
    t.now += 1.5
    p.observe(429)
    assert p.rate == 3000.0 * DECREASE_FACTOR**2
    for _ in range(30):
        t.now += 1.0
        p.acquire()
    assert p.rate == 3000.0  # back to the configured pace, never above it


def test_retry_after_holds_every_request_in_full() -> None:
    p, t = pacer(3000.0)
    p.observe(503, retry_after=7)
    start = t.now
    p.acquire()
    assert t.now - start >= 7


def test_rejects_nonsense_rate() -> None:
    with pytest.raises(ValueError):
        Pacer(0)
