"""One pacer shared by every worker and every HTTP request to FCM: it finds FCM's quota
and holds just under it.

FCM's topic-management quota (3,000 requests per second per project, per the docs) is
counted per token on the v1 API, where one token is one request, so pacing is done per
request at the HTTP layer, beneath firebase-admin's thread fan-out (a legacy batch costs
its token count). The quota a project really has may be lower, and nobody says how it is
enforced: a token bucket lets a second's burst through, then refuses the excess over its
rate; a sliding one-second window refuses everything until old requests leave it. Either
way 429s come late and in bursts, with a `Retry-After` (or a RetryInfo detail) or without.
The pacer rides the quota whatever they look like:

- Evidence is what was sent since the pace last fell: answers to requests sent before a
  decrease say nothing about the new pace, so a burst of 429s lowers the pace once.
- On that evidence the quota is measured and the pace goes 3% under it. The measure is
  what got through of what was sent in the second before the 429, counted by when it was
  sent (as FCM counted it; a stalled client reads a second's answers late and at once):
  exactly a sliding window's quota, at least a bucket's (it may include the burst). If a
  run of 429s follows soon after, the bucket's burst was in it: the share refused of what
  was sent is then the measure. A share of a few dozen answers is coarse: a second later,
  once every answer is in, what got through of what was sent between the first and the
  last 429 since the pace last fell is counted (a bucket empty at both ends passed its rate
  between them), and a share under 90% of that count is raised to it (a count over a short
  span is itself a few percent off), never lowered by it, nor above what got through in
  the second before.
- For a second after a decrease, what was sent in the last second at the old pace counts
  against the new one (a sliding window still holds it), so nothing is sent into a full
  window; a few 429s in that second are the old pace's, not evidence. Near a measured
  quota (an earlier command's, until this one measures its own) a stalled client catches up
  little, as a window refuses a catch-up a second later. No catch-up puts more than the
  configured rate into any second: the default is FCM's published quota, and a window of
  exactly that refuses the excess.
- At the configured rate, a few 429s need not mean a quota below it: a window counts
  arrivals, and a stall of the client's (or of the way there) bunches them, so a window of
  exactly the rate refuses some however evenly they were sent. When one second of the last
  two got the pace through (a lower quota never lets that much) and 429s are under 1% of
  those seconds' answers, the pace holds the rate (the refused are asked again), and the
  next command starts from it as a rate that got through.
- A 429 that carries a wait holds what it refused that long: in a stream's last second, it
  ends the stream that much later (a 3-second day took 4). When FCM's 429s carry one (this
  command saw it, or an earlier one learned it), the stream's last 1.25 seconds, as its
  caller said how much is to come (`expect`), go 1.5% under the quota: a window full at
  the rate keeps that much room for the arrivals' jitter.
- At the configured rate, only what the stream itself fell behind is caught up: a burst at
  its start (after an idle second) would be repaid a second later, as the sends the window
  cap then holds back, against a window that counted the burst's arrivals a little late.
- After a clean interval in which the pace held requests back: well below the last measure,
  the pace returns halfway to it; near it, it climbs 0.5% a second, so a raised quota is
  found again. An interval that did not use the pace (a plan, a transaction) raises nothing.
- A command starts from what an earlier one learned (`start`, a `Quota`): just under a
  measured quota, probing up 2% each clean quarter second until the first 429 (a low
  measure cannot stick); from a rate that merely got through, doubling from it. With
  nothing learned (slow start): from two thirds of the configured rate (of FCM's published
  quota at most), doubling to it as soon as half a second's worth of that pace got through. A
  quota under that much is met before the pace doubles: the first 429s of a sliding window
  that fills at its quota's count, and of a bucket whose second's burst runs out, come
  while the pace is still two thirds of the configured rate, and cost what that pace puts
  in flight; FCM's own quota is held from the first second. The first 429s a command meets
  hold every send until they are evidence enough (into a full window more is only
  refused).
  `learned()` is what this command found, for the next one: what got through per second
  while the pace held requests back, once the quota was found, over the margin it rode
  below the quota, and no higher than the last measure (one measure may be high or low;
  what got through while riding is the margin under the quota: remembered as is, each
  command would start lower than the one before).
- A `Retry-After` on a 429 says when to ask again for what was refused: the refused
  requests are not asked again before then (`hold_remaining`, which the batch drainer
  waits), while the others go on at the lowered pace, as firebase-admin itself honours it
  per request. On any other answer (a 503: the service, not the quota) every request
  waits until it has passed.
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from topic_sync.fcm.wire import TOPIC_MANAGEMENT_QUOTA

# How much unused pace may be spent at once (a stalled client catching up). Little near a
# measured quota: into a sliding window that is nearly full, a catch-up is refused a second
# later, when the stall's hole leaves it.
BURST_SECONDS = 0.05
EDGE_BURST_SECONDS = 0.01
EDGE = 0.9  # a pace this close to the last measured quota is near it
INTERVAL = 0.25  # seconds: the pace is adjusted at least this often while answers come
# ...and sooner once an interval has this much evidence of 429s: overshooting a quota for a
# whole interval would cost hundreds of refused requests.
EARLY_REFUSED = 10.0
EARLY_AFTER = 0.02  # seconds: the shortest interval whose rate means anything
WINDOW = 1.0  # seconds: FCM's quota is per second; what got through is measured over this
MARGIN = 0.97  # after 429s, the pace goes this far below the quota measured
CLIMB_PER_SECOND = 0.005  # near the last measure, the pace rises by this share per second
PROBE_STEP = 0.02  # from a measured quota, the pace rises by this share per clean interval
MIN_RATE = 1.0
# Slow start begins at this share of the configured rate (of FCM's published quota at most),
# and doubles once what got through at that pace is START_EVIDENCE seconds of it.
START_SHARE = 2 / 3
START_EVIDENCE = 0.5
SLOW_START_RATE = 200.0  # a pace under this, with no quota measured, doubles each interval
FLOOR_FACTOR = 0.25  # one adjustment never cuts the pace below a quarter of what it was
RETURN_SHARE = 0.5  # of the way back to just under the last measured quota, per interval
FULL = 0.9  # 429s from this share of answers on: a full window, not an excess over a rate
USED = 0.5  # an interval that sent less than this share of its pace says nothing about more
RIDE = WINDOW  # riding the quota at least this long, what got through is its measure
MIN_SAMPLE = 20.0  # answers: the smallest sample a refused share is measured over
RECOUNT_SPAN = 0.02  # seconds: the shortest span between 429s a bucket's rate is counted over
# A count over a short span is a few percent off itself: it replaces a share only when the
# share is below this much of it.
RECOUNT_TRUSTED = 0.9
NEAR = 0.98  # this close to just under the last measured quota, the pace probes above it
# 429s at (or just under) the configured rate are the arrivals' jitter at a quota equal to
# it, not a quota below it, when what got through in one second of the last JITTER_SPAN
# reached JITTER_REACHED of the pace, and 429s are under JITTER_SHARE of that span's answers.
JITTER_SPAN = 2 * WINDOW
JITTER_REACHED = 0.99
JITTER_SHARE = 0.01
JITTER_FLOOR = 0.97  # "just under" the configured rate: a pace of at least this share of it
# A 429 that carries a wait (Retry-After, RetryInfo) in a stream's last second ends the
# stream that much later. When FCM's 429s carry one, the last END_SPAN seconds of a stream
# go at END_SHARE of the quota, leaving a window full at the rate room for jitter; from a
# second before the stream's end, after the quarter second that room takes to build.
END_SPAN = 1.25 * WINDOW
END_SHARE = 0.985


@dataclass(frozen=True)
class Quota:
    """What was learned about one FCM's quota: `rate` requests per second, `measured` if
    FCM refused above it (else that much merely got through: the quota is at least it), and
    whether its 429s say how long to wait (a stream's last second keeps a margin then)."""

    rate: float
    measured: bool
    waits: bool = False  # its 429s carried a wait (Retry-After, RetryInfo)


@dataclass
class Recount:
    """What got through of what was sent between a bucket's first and last 429 of a run:
    counted once every answer is in (`due`), it is the bucket's rate, measured finer than
    by the share refused of a few dozen answers."""

    sent_from: float
    sent_to: float
    due: float
    cap: float  # what got through in the second before: a sliding window's exact quota
    got: float = 0.0

    def count(self, sent_at: float, cost: float) -> None:
        if self.sent_from <= sent_at <= self.sent_to:
            self.got += cost

    def rate(self) -> float:
        return min(self.cap, self.got / (self.sent_to - self.sent_from))


class Pacer:
    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        slow_start: bool = True,
        start: Quota | None = None,
    ) -> None:
        """`rate`: the most requests ever sent in one second (None: no limit); `start`: what
        an earlier command learned of the quota of the same FCM."""
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for no limit)")
        self.max_rate = rate
        self._slow_start = slow_start
        self.start_from(start)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        self._next_free = now
        self._stream_from = now  # the first send after an idle WINDOW
        self._not_before = 0.0  # every request waits until then (Retry-After, not a 429)
        self._reask_after = 0.0  # requests refused with a 429 are not asked again before
        # The current interval's evidence: cost sent (from when), and of the cost sent
        # since the pace last fell, what was answered, refused, and answered since the
        # first refusal.
        self._interval_start = now
        self._sent = 0.0
        self._sent_from: float | None = None
        self._answered = self._refused = self._since_refused = 0.0
        self._first_refused_at: float | None = None
        self._answered_at = self._through_then = 0.0  # the last answer; the last 429's
        # Every send of the last two windows: times and running cost totals, from _head on.
        self._send_times: list[float] = []
        self._send_totals: list[float] = []
        self._head = 0
        self._total = 0.0
        self._capped_until = float("-inf")  # sends until then fit the pace in any WINDOW
        self._accepted: collections.deque[tuple[float, float]] = collections.deque()
        self._accepted_sum = 0.0  # cost accepted of what was sent within the last WINDOW
        self._last_decrease = float("-inf")
        self.ceiling: float | None = None  # the quota as last measured (after 429s)
        self._ride_time = self._ride_accepted = 0.0  # since the quota was found, pace-bound
        self._interval_accepted = 0.0  # cost that got through, answered in the interval
        self._refused_sent: collections.deque[float] = collections.deque()  # 429s: sent at
        self._recount: Recount | None = None  # a bucket's share measure, to count again
        # Answers of the last JITTER_SPAN (answered at, cost, cost refused) and their sums;
        # what got through per WINDOW, by send time, decreasing: its largest of the span first.
        self._recent: collections.deque[tuple[float, float, float]] = collections.deque()
        self._recent_answered = self._recent_refused = 0.0
        self._peaks: collections.deque[tuple[float, float]] = collections.deque()
        self.peak = 0.0  # the most that got through in one WINDOW, per second
        self.throttled = 0  # 429 answers seen
        self.answered = 0  # answers seen, 429s included
        self.waited = 0.0  # seconds requests spent held back

    def start_from(self, learned: Quota | None) -> None:
        """Begin from what an earlier command learned of this FCM's quota (before the first
        request). Slow start, with nothing learned: begin at START_SHARE of the configured
        rate and double to it once half a second of that pace got through, so a quota below
        that is met at two thirds of the rate, not at the full rate with every worker's
        requests in flight."""
        if learned is not None and not learned.rate > 0:
            raise ValueError("a learned quota must be positive")
        rate, self._start = self.max_rate, learned
        self._waits = learned is not None and learned.waits
        self._expected: float | None = None  # requests still to come in the stream, if told
        self.rate = rate
        self._starting = self._probing = False
        self._at_pace = 0.0  # cost that got through since slow start last doubled the pace
        if rate is None:
            return
        if learned is not None and learned.measured:
            self.rate = min(rate, max(MIN_RATE, MARGIN * learned.rate))
            self._probing = self.rate < rate
        elif learned is not None or self._slow_start:
            share = START_SHARE * min(rate, TOPIC_MANAGEMENT_QUOTA)
            begin = max(SLOW_START_RATE, share if learned is None else learned.rate)
            self.rate = min(rate, begin)
            self._starting = self.rate < rate

    @property
    def first_second_rate(self) -> float | None:
        """The most requests per second it lets out within its first second (None: no
        limit): the configured rate while it starts (slow start doubles to it within a
        second unless FCM refuses), else its pace."""
        return self.max_rate if self._starting else self.rate

    def expect(self, requests: float) -> None:
        """About `requests` more are to be sent in this stream (a drain's pass): its last
        END_SPAN seconds keep a margin under the quota when FCM's 429s carry a wait."""
        with self._lock:
            self._expected = max(0.0, requests)

    def now(self) -> float:
        """The pacer's clock: callers give `observe` the time they sent a request by it."""
        return self._clock()

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
                # Never more than the configured rate in any WINDOW (a catch-up included);
                # for a second after a decrease, never more than the new pace.
                cap = self.rate if start < self._capped_until else self.max_rate
                assert cap is not None
                start = max(start, self._window_free(cost, cap * WINDOW))
            if not_after is not None and start > not_after:
                return None
            if self.rate is not None:
                if self._starting and self.max_rate is not None:
                    # While starting, the pace counts requests: a legacy batch (cost 1000)
                    # at the slow-start pace would book seconds ahead for the batches behind
                    # it, which the doubling pace never gives back. The configured rate
                    # still holds.
                    spacing = max(1.0 / self._pace(cost), cost / self.max_rate)
                else:
                    spacing = cost / self._pace(cost)
                # Unused pace may be spent at once, but not across a hold: after one, the
                # pace resumes from its end.
                quota = self.ceiling if self.ceiling is not None else self._learned_quota()
                near = quota is not None and self.rate > EDGE * quota
                burst = EDGE_BURST_SECONDS if near else BURST_SECONDS
                if self._idle(now):
                    self._stream_from = now
                # At the full rate, only what the stream itself fell behind is caught up: a
                # burst at its start would be repaid a second later, against a window that
                # counted its arrivals a little late (429s at the 1-second mark of a day,
                # and a hole in its sending).
                since = self._stream_from if self.rate == self.max_rate else float("-inf")
                credit = max(now - burst, since) if start <= now else start
                self._next_free = max(self._next_free, credit) + spacing
            self._log_send(now, start, cost)
            wait = max(start - now, 0.0)
            self.waited += wait
        return wait

    def observe(
        self,
        status: int,
        retry_after: float | None = None,
        cost: float = 1.0,
        sent_at: float | None = None,
    ) -> None:
        """Learn from the answer to `cost` requests sent at `sent_at` (by `now()`; None if not
        known): count it toward the interval's evidence, and honour a Retry-After."""
        with self._lock:
            now = self._clock()
            refused = status == 429
            if refused:
                # The first 429 of a command says whether they carry a wait; then any.
                hinted = retry_after is not None and retry_after > 0
                self._waits = hinted or (self._waits and self.throttled > 0)
            if retry_after is not None and retry_after > 0:
                if refused:
                    self._reask_after = max(self._reask_after, now + retry_after)
                else:
                    self._not_before = max(self._not_before, now + retry_after)
            self.answered += 1
            at = now if sent_at is None else sent_at
            self._count_recent(now, cost, refused)
            if refused:
                self.throttled += 1
                if sent_at is not None:
                    self._refused_sent.append(sent_at)
                    while self._refused_sent[0] < sent_at - WINDOW:
                        self._refused_sent.popleft()
            else:
                self._accept(at, cost)
                self._interval_accepted += cost
                self._at_pace += cost
                if self._recount is not None and sent_at is not None:
                    self._recount.count(sent_at, cost)
            # Answers to requests sent before the pace last fell are not evidence about it.
            if sent_at is not None:
                fresh = sent_at >= self._last_decrease
            else:
                fresh = now - self._last_decrease >= INTERVAL
            if not fresh:
                return
            self._answered += cost
            self._answered_at = now
            if refused:
                self._refused += cost
                # What got through as this 429 came: an interval is closed only on the next
                # call, which may come after an idle spell that would measure nothing.
                self._through_then = self._through(at)
                if self._first_refused_at is None:
                    self._first_refused_at = now
                    if self.ceiling is None and not self._only_jitter(now):
                        # The first 429s against this FCM: while their evidence gathers,
                        # send nothing (into a full window, whatever is sent now is refused
                        # too, and slow start may have overshot the quota twice over).
                        self._next_free = max(self._next_free, now + EARLY_AFTER)
            if self._first_refused_at is not None:
                self._since_refused += cost
                early = self._refused >= EARLY_REFUSED
                early = early and now - self._first_refused_at >= EARLY_AFTER
                self._adjust(now, early=early)
            else:
                self._adjust(now)

    def hold_remaining(self) -> float:
        """Seconds until the latest Retry-After has passed (0 if none is pending): requests
        FCM refused are not to be asked again before then."""
        with self._lock:
            now = self._clock()
            return max(0.0, self._not_before - now, self._reask_after - now)

    def learned(self) -> Quota | None:
        """What this pacer found out about the quota, for the next command against the same
        FCM; None if nothing beyond what it started from."""
        with self._lock:
            if self.ceiling is not None and self._last_decrease == float("-inf"):
                # A quota known with the pace never cut: the 429s came only as the arrivals'
                # jitter at the configured rate (the one other way to a ceiling). The quota
                # is at least that (what got through), not a measure to ride under.
                return Quota(self.peak, measured=False, waits=self._waits)
            if self.ceiling is not None:
                # What got through per second while the pace held requests back, since the
                # quota was first found: a single measure can be high (a bucket's burst in
                # the second it was taken over) or low (the client stalled in it). The pace
                # rode MARGIN under the quota: the ride over MARGIN measures it, no higher
                # than the last measure (a short command's ride is a poor sample).
                if self._ride_time >= RIDE:
                    ride = self._ride_accepted / self._ride_time / MARGIN
                    return Quota(min(ride, self.ceiling), measured=True, waits=self._waits)
                return Quota(self.ceiling, measured=True, waits=self._waits)
            start = self._start
            if start is not None and self.peak <= start.rate:
                # Nothing new of the rate; what the 429s look like may be.
                changed = start.waits != self._waits
                return Quota(start.rate, start.measured, self._waits) if changed else None
            if self.peak <= 0:
                return None
            return Quota(self.peak, measured=False, waits=self._waits)

    # Everything below runs under the lock.

    def _quota_known(self) -> bool:
        return self.ceiling is not None or self._learned_quota() is not None

    def _learned_quota(self) -> float | None:
        """The quota an earlier command measured, until this one measures its own."""
        start = self._start
        return start.rate if start is not None and start.measured else None

    def _pace(self, cost: float) -> float:
        """The pace for a send of `cost`: the stream's last END_SPAN seconds, when 429s carry
        a wait, go at END_SHARE of the quota (of the configured rate, with none measured)."""
        assert self.rate is not None and self.max_rate is not None
        expected = self._expected
        if expected is None:
            return self.rate
        self._expected = max(0.0, expected - cost)
        if not self._waits or expected - cost > END_SPAN * self.rate:
            return self.rate
        quota = self.ceiling if self.ceiling is not None else self.max_rate
        return min(self.rate, END_SHARE * quota)

    def _idle(self, now: float) -> bool:
        """Nothing was sent in the last WINDOW."""
        times = self._send_times
        return self._head >= len(times) or times[-1] <= now - WINDOW

    def _log_send(self, now: float, at: float, cost: float) -> None:
        self._sent += cost
        if self._sent_from is None:
            self._sent_from = at
        self._total += cost
        self._send_times.append(at)
        self._send_totals.append(self._total)
        times = self._send_times
        while self._head < len(times) and times[self._head] <= now - 2 * WINDOW:
            self._head += 1
        if self._head > 4096:
            del self._send_times[: self._head], self._send_totals[: self._head]
            self._head = 0

    def _window_free(self, cost: float, cap: float) -> float:
        """The earliest time `cost` more can go out with at most `cap` sent in any WINDOW,
        counting what was sent already."""
        need = self._total + cost - cap  # the running total that must have left the window
        if need <= 0 or self._head >= len(self._send_totals):
            return float("-inf")
        i = bisect.bisect_left(self._send_totals, need, lo=self._head)
        return self._send_times[min(i, len(self._send_times) - 1)] + WINDOW

    def _count_again(self, now: float, cap: float) -> None:
        """Count a bucket's rate from its 429s of the last second, once every answer is in.

        A bucket refuses only when empty: between two of its 429s, however the client sent
        (stalls included; a second's worth of burst cannot overflow in under a second), what
        got through is its rate times the time between. Only 429s to what was sent since the
        last decrease: before it, slow start may have sent faster than requests could leave
        the client, and their send times are not when FCM counted them."""
        since = max(now - WINDOW, self._last_decrease)
        sent = [at for at in self._refused_sent if at >= since]
        if not sent or max(sent) - min(sent) < RECOUNT_SPAN:
            return
        self._recount = Recount(min(sent), max(sent), due=now + WINDOW, cap=cap)
        for at, cost in self._accepted:
            self._recount.count(at, cost)

    def _measured_again(self, quota: float) -> None:
        """A bucket's quota counted once every answer is in: a share well under it is raised."""
        if self.ceiling is None or self.rate is None or self.max_rate is None:
            return
        if self.ceiling < RECOUNT_TRUSTED * quota:
            self.ceiling = quota
            self.rate = min(self.max_rate, max(self.rate, MARGIN * quota))

    def _accept(self, at: float, cost: float) -> None:
        """Count `cost` that got through, sent at `at`."""
        self._accepted.append((at, cost))
        self._accepted_sum += cost
        through = self._through(at)
        self.peak = max(self.peak, through)
        peaks = self._peaks
        while peaks and peaks[-1][1] <= through:
            peaks.pop()
        peaks.append((at, through))
        while peaks[0][0] <= at - JITTER_SPAN:
            peaks.popleft()

    def _through(self, at: float) -> float:
        """Requests per second that got through of those sent in the WINDOW up to `at`.

        Counted by when they were sent, which is when FCM counted them (give or take the
        way there), not by when their answers were read: a client that stalls reads a
        second's answers late and all at once."""
        log = self._accepted
        while log and log[0][0] <= at - WINDOW:
            self._accepted_sum -= log.popleft()[1]
        return self._accepted_sum / WINDOW

    def _adjust(self, now: float, early: bool = False) -> None:
        """Close the interval if it is over, and move the pace on its evidence."""
        if self._recount is not None and now >= self._recount.due:
            self._measured_again(self._recount.rate())
            self._recount = None
        elapsed = now - self._interval_start
        # Slow start doubles as soon as its evidence is in: waiting for the interval's end,
        # which half a second's answers (sent in the first half second, less a round trip)
        # reach just at or just after, cost a first command a quarter second at two thirds
        # of the rate about every other time.
        doubling = self._starting and not self._refused and self._start_evidence_in()
        if elapsed < (EARLY_AFTER if early or doubling else INTERVAL):
            return
        used = self.rate is not None and self._sent >= USED * self.rate * elapsed
        if used and self.ceiling is not None:
            self._ride_time += elapsed
            self._ride_accepted += self._interval_accepted
        if self.rate is not None and self.max_rate is not None:
            refusal = self._refused >= EARLY_REFUSED
            refusal = refusal or bool(self._refused and now >= self._capped_until)
            if refusal and self._only_jitter(now):
                # The quota is the configured rate itself: hold it (the refused are asked
                # again). Cutting 3% under a second's measure a stall made low cost the rest
                # of the day 5-8% of a 3,000/s sliding window; as a quota known, it also
                # keeps catch-ups small.
                self.ceiling = self.max_rate
            elif refusal:
                self._decrease(now)
            elif self._refused:
                pass  # a few 429s within a second of a decrease: the old pace's
            elif not used:
                pass  # the pace was not what held requests back: no evidence for more
            elif self._starting and not self._start_evidence_in():
                pass  # not yet enough got through at this pace to say a quota is above it
            elif self._starting or (self.rate < SLOW_START_RATE and not self._quota_known()):
                # Below slow start's rate with no quota measured (a deep cut), double back
                # up. With one measured, return toward it instead: doubling there would
                # overshoot a quota under slow start's rate every other interval.
                self.rate = min(self.max_rate, self.rate * 2.0)
                self._starting = self._starting and self.rate < self.max_rate
                self._at_pace = 0.0
            elif self._probing:
                self.rate = min(self.max_rate, self.rate * (1.0 + PROBE_STEP))
                self._probing = self.rate < self.max_rate
            elif self.ceiling is not None and self.rate < NEAR * MARGIN * self.ceiling:
                # Well below the last quota measured: go back toward it quickly (and, once
                # near, probe above it: the measure itself may have been low).
                gap = MARGIN * self.ceiling - self.rate
                self.rate = min(self.max_rate, self.rate + gap * RETURN_SHARE)
            else:
                self.rate = min(self.max_rate, self.rate * (1 + CLIMB_PER_SECOND * elapsed))
        self._interval_start, self._sent, self._sent_from = now, 0.0, None
        self._answered = self._refused = self._since_refused = 0.0
        self._first_refused_at = None
        self._interval_accepted = 0.0

    def _start_evidence_in(self) -> bool:
        """Enough got through at slow start's pace to say a quota is above it."""
        return self.rate is not None and self._at_pace >= START_EVIDENCE * self.rate

    def _count_recent(self, now: float, cost: float, refused: bool) -> None:
        self._recent.append((now, cost, cost if refused else 0.0))
        self._recent_answered += cost
        self._recent_refused += cost if refused else 0.0
        while self._recent[0][0] <= now - JITTER_SPAN:
            _, answered, refused_cost = self._recent.popleft()
            self._recent_answered -= answered
            self._recent_refused -= refused_cost

    def _only_jitter(self, now: float) -> bool:
        """The 429s are the arrivals' jitter at a quota equal to the configured rate: the
        pace is that rate (or within JITTER_FLOOR of it), a second of the last
        JITTER_SPAN got the pace through (a quota below it never lets that much), and 429s
        are a small share of the span's answers.

        A window counts arrivals, and a client's stall (or the network's) bunches them: at
        exactly its quota, some are refused however evenly they were sent."""
        if self.rate is None or self.max_rate is None:
            return False
        if self._starting or self.rate < JITTER_FLOOR * self.max_rate:
            return False
        peaks = self._peaks
        while peaks and peaks[0][0] <= now - JITTER_SPAN:
            peaks.popleft()
        if not peaks or peaks[0][1] < JITTER_REACHED * self.rate:
            return False
        return self._recent_refused < JITTER_SHARE * self._recent_answered

    def _decrease(self, now: float) -> None:
        """FCM refused what was sent at the current pace: measure the quota, go under it."""
        assert self.rate is not None
        self._recount = None
        through = self._through_then
        sending = self._answered_at - (
            self._interval_start if self._sent_from is None else self._sent_from
        )
        sent = self._sent / max(sending, EARLY_AFTER)
        soon = now - self._last_decrease < 2 * WINDOW
        if soon and EARLY_REFUSED <= self._refused < FULL * self._since_refused:
            # A run of 429s soon after a decrease, some requests still getting through: what
            # got through in the last second was more than the quota (a bucket's burst was
            # in it). The bucket is empty now and refuses the excess over its rate: the
            # share refused of what was sent since the 429s began is the quota. (Nothing
            # getting through at all is a full sliding window instead.)
            share = self._refused / max(self._since_refused, MIN_SAMPLE)
            quota, floor = min(through, sent * (1.0 - share)), FLOOR_FACTOR
            self._count_again(now, cap=through)
        else:
            # What got through of what was sent in the second before the 429: exactly a
            # sliding window's quota (it refuses only when full), at least a bucket's (it
            # refuses once its burst is spent, which may be in that second). A whole
            # second of answers is a surer measure than a share of a few: it may cut deeper.
            quota, floor = through, FLOOR_FACTOR**2
        # One measure can be wrong: never below `floor` of the pace at once.
        self.ceiling = max(quota, floor * self.rate)
        self.rate = max(MIN_RATE, MARGIN * min(self.rate, self.ceiling))
        # What was sent at the old pace stays in a sliding window for a second: until it
        # has left, the new pace counts it.
        self._capped_until = now + WINDOW
        self._last_decrease = now
        self._starting = self._probing = False
