"""The v1 topic subscription API over a lean keep-alive client (`--transport v1-direct`).

firebase-admin sends a 1000-token call as 1000 `requests` calls fanned out over up to 100
threads: about 0.7 ms of client CPU per token, spent mostly handing work between threads, so
one process tops out far below FCM's quota. This transport sends the very same bytes (method,
target, headers in the SDK's order, body: `tests/integration/test_client.py` compares them
with what firebase-admin sends) from one event-loop thread over persistent HTTP/1.1
connections (http1.py, through the egress proxy requests would use), and reads each raw
answer by the same evidence rule as the SDK path
(answers.py, with the SDK's own error parser): a success of the documented shape, or an
error carrying FCM's details, is about the token; anything else, a redirect included (this
client never follows one), is no verdict.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from urllib.parse import quote

import firebase_admin
import urllib3

from topic_sync.fcm.answers import NO_ANSWER, RawAnswer, TokenAnswer, read_topic_answer
from topic_sync.fcm.client import BatchResult
from topic_sync.fcm.http1 import LoopThread, Pool, Proxy
from topic_sync.fcm.pacer import Pacer
from topic_sync.fcm.sdk_bridge import (
    FCM_HOST,
    HTTP_TIMEOUT_SECONDS,
    DirectAuth,
    mounted_adapter,
    registration_segment,
    topic_error_code,
    wait_hint,
)
from topic_sync.states import FcmApi

# Requests in flight per client, all batches together. At 50 ms of FCM latency the quota
# (3,000/s) needs 150 in flight, and more to catch up after a pause; each request also
# spends the client's and the server's time, so 192 gave about 3,000/s, 320 about 3,700/s
# and 448 less again on two cores (bench/RESULTS.md I.5). firebase-admin itself opens up
# to 100 per call, per worker.
DIRECT_CONNECTIONS = 320
# Before a day's first request (while its plan is made), the connections its first second
# keeps busy are opened: its pace times this long in flight each (FCM answers in tens of
# milliseconds). Opened as requests come instead, they cost that second's pace, and a first
# command's slow start reads its first 429s later (more of them in flight).
WARM_SECONDS = 0.1
NOT_SENT = TokenAnswer("NOT_SENT", False)  # the batch's time was up before it could go out


class V1DirectTopics:
    """The v1 topic subscription API without firebase-admin's per-request cost.

    Same requests as the SDK, byte for byte, paced by the same pacer; errors are read
    with the SDK's own parser.
    """

    api = FcmApi.V1

    def __init__(self, app: firebase_admin.App, connections: int = DIRECT_CONNECTIONS) -> None:
        self.app = app
        adapter = mounted_adapter(app)
        self._pacer: Pacer | None = adapter.pacer
        self._auth = DirectAuth(app)
        self._loop = LoopThread.loop()
        origin = adapter.target or FCM_HOST
        proxy = self._auth.proxy_for(origin)
        self._pool = Pool(origin, connections, Proxy.of(proxy) if proxy else None)
        self._pacing: asyncio.Lock | None = None  # created on the loop
        self._connections = connections
        self.warming: Future[int] | None = None  # the last warm_up's: connections it opened
        # Requests waiting for a sender, in the order their batches came; on the loop only.
        self._queue: collections.deque[tuple[_Pending, int, _Send]] = collections.deque()
        self._sending = 0
        self._senders: set[asyncio.Task[None]] = set()
        # The SDK builds its URLs on FCM's own host; only the connection goes elsewhere.
        self._root = f"{FCM_HOST}/v1/projects/{app.project_id}/registrations"
        self._path_root = f"/v1/projects/{app.project_id}/registrations"
        weakref.finalize(self, self._loop.call_soon_threadsafe, self._pool.close)

    def warm_up(self, requests: int | None) -> None:
        """Open, in the background, the connections about `requests` (None: not known) will
        use in the pacer's first second, so that they are open when those begin."""
        pace = self._pacer.first_second_rate if self._pacer is not None else None
        count = self._connections if pace is None else math.ceil(pace * WARM_SECONDS)
        count = min(count, self._connections)
        if requests is not None:
            count = min(count, requests)
        if count > 0:
            self.warming = asyncio.run_coroutine_threadsafe(
                self._pool.warm(count, HTTP_TIMEOUT_SECONDS), self._loop
            )

    def manage(
        self, batch: list[str], topic: str, *, subscribe: bool, give_up_at: float | None
    ) -> BatchResult:
        head = self._head(subscribe)  # may refresh the credential: not on the loop
        future: Future[list[TokenAnswer]] = asyncio.run_coroutine_threadsafe(
            self._batch(batch, topic, subscribe, head, give_up_at), self._loop
        )
        return BatchResult.of_answers(future.result())

    def _head(self, subscribe: bool) -> str:
        """Every header line the SDK would send after the request line, Host first."""
        method = "post" if subscribe else "delete"
        url = f"{self._root}/token/topicSubscriptions"
        fields = self._auth.sdk_headers(method, url, {} if subscribe else None)
        lines = "".join(f"{name}: {value}\r\n" for name, value in fields)
        return f"Host: {self._pool.host_header}\r\n{lines}\r\n"

    async def _batch(
        self, batch: list[str], topic: str, subscribe: bool, head: str, give_up_at: float | None
    ) -> list[TokenAnswer]:
        """Queue the batch's requests behind those of the batches before it, and wait for
        their answers.

        The requests of every batch go out in the order their batches came (so batches end
        one after the other, and a worker that records one has the next claimed while the
        others' requests still go), each sent by one of at most `connections` senders that
        exist only while requests are queued. A task per request would cost more: queued
        all at once, a thousand tasks' first steps stand between the pacer's turns, and the
        pace stalls a tenth of a second at each batch.
        """
        encoded_topic = quote(topic, safe="")
        pending = _Pending(batch, asyncio.get_running_loop().create_future())

        def request(token: str, head: str) -> bytes:
            segment = registration_segment(token)
            path = f"{self._pool.target_prefix}{self._path_root}/{segment}/topicSubscriptions"
            if subscribe:
                line = f"POST {path}?topic_name={encoded_topic} HTTP/1.1\r\n"
                return (line + head).encode("latin-1") + b"{}"
            line = f"DELETE {path}/{encoded_topic}?allow_missing=true HTTP/1.1\r\n"
            return (line + head).encode("latin-1")

        async def one(token: str) -> TokenAnswer:
            answer = await self._send(request(token, head), subscribe, topic, give_up_at)
            if answer.reason == "UNAUTHENTICATED":
                # The token may have expired early: refresh once and try again, as
                # google-auth's session does for the SDK's own requests.
                self._auth.expire()
                fresh = await asyncio.to_thread(self._head, subscribe)
                answer = await self._send(request(token, fresh), subscribe, topic, give_up_at)
            return answer

        self._queue.extend((pending, index, one) for index in range(len(batch)))
        while self._sending < min(self._connections, len(self._queue)):
            self._sending += 1
            sender = asyncio.get_running_loop().create_task(self._sender())
            self._senders.add(sender)  # the loop keeps only a weak reference to a task
            sender.add_done_callback(self._senders.discard)
        return await pending.done

    async def _sender(self) -> None:
        """Send queued requests, one at a time, until none is left."""
        try:
            while self._queue:
                pending, index, one = self._queue.popleft()
                if pending.done.done():
                    continue  # the batch failed: the rest of it is not sent
                try:
                    answer = await one(pending.tokens[index])
                except Exception as error:  # a fault of this code: the batch ends with it
                    if not pending.done.done():  # (another of its requests may have failed)
                        pending.done.set_exception(error)
                else:
                    pending.answer(index, answer)
        finally:
            # At once, not in a done callback: a batch queued meanwhile must find a sender.
            self._sending -= 1

    async def _paced(self, give_up_at: float | None) -> bool:
        """Wait for this request's place in the pace; False if it comes too late. One request
        waits at a time, so a slower pace learned meanwhile applies to the very next one."""
        assert self._pacer is not None
        if self._pacing is None:
            self._pacing = asyncio.Lock()
        async with self._pacing:
            wait = self._pacer.reserve(1, give_up_at)
            if wait is None:
                return False
            if wait > 0:
                await asyncio.sleep(wait)
        return True

    async def _send(
        self, request: bytes, subscribe: bool, topic: str, give_up_at: float | None
    ) -> TokenAnswer:
        """The answer to one request, read by the evidence rule."""
        pacer = self._pacer
        async with self._pool.turn():
            if give_up_at is not None and time.monotonic() >= give_up_at:
                return NOT_SENT
            if pacer is not None and not await self._paced(give_up_at):
                return NOT_SENT
            sent_at = pacer.now() if pacer is not None else 0.0
            try:
                answer = await self._pool.request(request, HTTP_TIMEOUT_SECONDS)
            except (
                OSError,
                EOFError,
                ValueError,
                IndexError,
                asyncio.LimitOverrunError,
                urllib3.exceptions.HTTPError,  # a body whose content coding does not decode
            ):
                return TokenAnswer(NO_ANSWER, False)
        if pacer is not None:
            parsed: object = None
            if answer.status >= 400:
                try:
                    parsed = json.loads(answer.body or b"{}")
                except ValueError:
                    parsed = None
            pacer.observe(answer.status, wait_hint(_titled(answer.headers), parsed), 1.0, sent_at)
        raw = RawAnswer(answer.status, answer.body, answer.headers.get("location"))
        return read_topic_answer(raw, subscribe=subscribe, topic=topic, error_code=topic_error_code)


def _titled(headers: dict[str, str]) -> dict[str, str]:
    return {"Retry-After": headers["retry-after"]} if "retry-after" in headers else {}


_Send = Callable[[str], Awaitable[TokenAnswer]]


class _Pending:
    """A batch whose requests are queued: its answers so far, and when all have come."""

    def __init__(self, tokens: list[str], done: asyncio.Future[list[TokenAnswer]]) -> None:
        self.tokens, self.done = tokens, done
        self.answers: list[TokenAnswer] = [NOT_SENT] * len(tokens)
        self._left = len(tokens)
        if not tokens:
            done.set_result(self.answers)

    def answer(self, index: int, answer: TokenAnswer) -> None:
        self.answers[index] = answer
        self._left -= 1
        if self._left == 0 and not self.done.done():
            self.done.set_result(self.answers)
