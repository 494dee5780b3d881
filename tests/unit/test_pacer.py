"""The shared pacer, on a fake clock: no real waiting."""

from __future__ import annotations

import heapq

import pytest

from topic_sync.fcm.pacer import Pacer


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


def simulate(quota, latency, *, concurrency=64, requests=50_000, max_rate=3000.0):
    """Virtual time: workers send through the pacer to an FCM whose quota is a token bucket
    (one second of burst, as the emulator's), answers arrive `latency` later. Returns (the
    share of the quota used, the share of requests answered 429, the pacer)."""
    t = FakeTime()
    start = t.now
    p = Pacer(max_rate, clock=t.clock, sleep=t.sleep)
    level, last, flight, accepted, refused = float(quota), start, [], 0, 0

    def deliver(upto: float) -> None:
        while flight and flight[0][0] <= upto:
            _, status = heapq.heappop(flight)
            p.observe(status)

    sent = 0
    while sent < requests:
        deliver(t.now)
        if len(flight) >= concurrency:
            t.now = flight[0][0]
            continue
        p.acquire()
        deliver(t.now)
        level = min(quota, level + (t.now - last) * quota)
        last = t.now
        if level >= 1:
            level, status, accepted = level - 1, 200, accepted + 1
        else:
            status, refused = 429, refused + 1
        heapq.heappush(flight, (t.now + latency, status))
        sent += 1
    deliver(float("inf"))
    return accepted / (t.now - start) / quota, refused / sent, p


@pytest.mark.parametrize(
    ("quota", "latency"), [(700, 0.0), (700, 0.05), (400, 0.0), (1000, 0.02), (2800, 0.0)]
)
def test_the_pace_finds_the_quota_and_holds_it(quota, latency) -> None:
    # The configured rate (3000/s, FCM's published quota) is above what this project gets:
    # the pacer must find the real quota and ride it, not bounce off it.
    used, refused, p = simulate(quota, latency)
    assert used >= 0.9, f"only {used:.0%} of the quota used"
    assert refused < 0.01, f"{refused:.2%} of requests answered 429"
    assert p.ceiling is not None and p.rate <= 1.1 * quota


def test_the_pace_never_exceeds_the_configured_rate() -> None:
    used, refused, p = simulate(5000, 0.0, max_rate=1000.0)
    assert refused == 0 and p.rate <= 1000.0
    assert used == pytest.approx(0.2, rel=0.02)  # 1000 of a 5000/s quota: the cap holds


def test_a_burst_of_429s_from_one_moment_lowers_the_pace_once() -> None:
    p, t = pacer(3000.0)
    for _ in range(200):
        p.observe(200)
    t.now += 0.1
    for _ in range(50):  # many workers' answers within moments of each other
        t.now += 0.001
        p.observe(429)
    first = p.rate
    assert first < 3000.0
    for _ in range(50):
        t.now += 0.001
        p.observe(429)
    assert p.rate == first  # the same episode does not lower it again at once
    assert p.throttled == 100


def test_retry_after_holds_every_request_in_full() -> None:
    p, t = pacer(3000.0)
    p.observe(503, retry_after=7)
    start = t.now
    p.acquire()
    assert t.now - start >= 7


def test_rejects_nonsense_rate() -> None:
    with pytest.raises(ValueError):
        Pacer(0)


def test_slow_start_does_not_hold_legacy_batches_for_seconds() -> None:
    # At the slow-start pace (100/s) a 1000-token batch would book 10 s for the next one;
    # the pace doubles within a second, so that wait would be pure loss.
    p, t = pacer(1_000_000.0)
    start = t.now
    for _ in range(20):
        p.acquire(1000)
        p.observe(200, cost=1000)
    assert t.now - start < 0.5
