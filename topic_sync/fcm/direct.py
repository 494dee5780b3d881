"""The v1 topic subscription API over a lean keep-alive client (`--transport v1-direct`).

firebase-admin sends a 1000-token call as 1000 `requests` calls fanned out over up to 100
threads: about 0.7 ms of client CPU per token, spent mostly handing work between threads, so
one process tops out far below FCM's quota. This transport sends the very same bytes (method,
target, headers in the SDK's order, body: `tests/integration/test_client.py` compares them
with what firebase-admin sends) from one event-loop thread over persistent HTTP/1.1
connections, and reads each raw answer by the same evidence rule as the SDK path
(answers.py, with the SDK's own error parser): a success of the documented shape, or an
error carrying FCM's details, is about the token; anything else, a redirect included (this
client never follows one), is no verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import ssl
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import firebase_admin
import urllib3

from topic_sync.fcm.answers import NO_ANSWER, RawAnswer, TokenAnswer, read_topic_answer
from topic_sync.fcm.client import BatchResult, SdkClient, check_batch
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
from topic_sync.states import Transport

# Requests in flight per client, all batches together. At 50 ms of FCM latency the quota
# (3,000/s) needs 150 in flight; firebase-admin itself opens up to 100 per call.
DIRECT_CONNECTIONS = 192
NOT_SENT = TokenAnswer("NOT_SENT", False)  # the batch's time was up before it could go out
MAX_HEAD_BYTES = 1 << 16


class _Dropped(Exception):
    """The connection closed before any byte of the answer: nothing was learned."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


class _Connection:
    """One persistent HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = False  # has answered a request before (so it may have gone stale)
        self.reusable = True

    async def exchange(self, request: bytes) -> Answer:
        self.writer.write(request)
        await self.writer.drain()
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            self.reusable = False
            if not error.partial:
                raise _Dropped from None
            raise
        except asyncio.LimitOverrunError:
            self.reusable = False
            raise
        lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked()
        elif "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif status in (204, 304) or status < 200:
            body = b""
        else:
            body = await self.reader.read()  # delimited by the end of the connection
            self.reusable = False
        if headers.get("connection", "").lower() == "close":
            self.reusable = False
        self.used = True
        return Answer(status, headers, _decoded(body, headers))

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.reusable = False
        with contextlib.suppress(Exception):
            self.writer.close()


def _decoded(body: bytes, headers: dict[str, str]) -> bytes:
    """The body without its content coding (the SDK's session asks for gzip, deflate)."""
    coding = headers.get("content-encoding", "identity").lower()
    if not body or coding == "identity":
        return body
    response = urllib3.HTTPResponse(
        body=io.BytesIO(body), headers=headers, decode_content=True, preload_content=True
    )
    return bytes(response.data)


class _Pool:
    """Up to `size` connections to one origin, reused; lives on the event loop."""

    def __init__(self, base: str, size: int) -> None:
        parts = urlsplit(base)
        self.https = parts.scheme == "https"
        self.hostname = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        # The Host header as http.client writes it (no port when it is the default one).
        default_port = 443 if self.https else 80
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self._size = size
        self._idle: list[_Connection] = []
        self._slots: asyncio.Semaphore | None = None
        self._ssl: ssl.SSLContext | None = None

    def turn(self) -> asyncio.Semaphore:
        """Held for the whole of one request, from pacing to answer: a request decides to go
        (deadline, pace) only once it has a connection, so nothing is booked far ahead."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        return self._slots

    async def request(self, request: bytes, timeout: float) -> Answer:
        """Send on an idle or new connection; the caller holds a turn."""
        # A reused connection the server closed while idle answers nothing at all: the
        # request is sent again on a fresh one (both topic calls are idempotent).
        for _attempt in range(2):
            conn = self._idle.pop() if self._idle else None
            fresh = conn is None
            try:
                async with asyncio.timeout(timeout):
                    if conn is None:
                        conn = await self._connect()
                    answer = await conn.exchange(request)
            except _Dropped:
                assert conn is not None
                conn.close()
                if fresh or not conn.used:
                    raise ConnectionError("connection closed without an answer") from None
                continue
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            if conn.reusable:
                self._idle.append(conn)
            else:
                conn.close()
            return answer
        raise ConnectionError("connection closed without an answer")

    async def _connect(self) -> _Connection:
        context = None
        if self.https:
            if self._ssl is None:
                import certifi  # the CA bundle the SDK's session (requests) verifies against

                self._ssl = ssl.create_default_context(cafile=certifi.where())
            context = self._ssl
        reader, writer = await asyncio.open_connection(
            self.hostname,
            self.port,
            ssl=context,
            server_hostname=self.hostname if context else None,
            limit=MAX_HEAD_BYTES,
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            import socket

            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(reader, writer)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class _LoopThread:
    """One event loop in a daemon thread for every direct client of the process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="fcm-direct", daemon=True).start()
                cls._loop = loop
            return cls._loop


class DirectV1Client(SdkClient):
    """The v1 topic subscription API without firebase-admin's per-request cost.

    Same requests as the SDK, byte for byte, paced by the same pacer; errors are read
    with the SDK's own parser. Publishing and listing still go through the SDK.
    """

    def __init__(self, app: firebase_admin.App, connections: int = DIRECT_CONNECTIONS) -> None:
        super().__init__(app, Transport.V1)
        self.transport = Transport.V1_DIRECT
        adapter = mounted_adapter(app)
        self._pacer: Pacer | None = adapter.pacer
        self._auth = DirectAuth(app)
        self._loop = _LoopThread.loop()
        self._pool = _Pool(adapter.target or FCM_HOST, connections)
        self._pacing: asyncio.Lock | None = None  # created on the loop
        # The SDK builds its URLs on FCM's own host; only the connection goes elsewhere.
        self._root = f"{FCM_HOST}/v1/projects/{app.project_id}/registrations"
        self._path_root = f"/v1/projects/{app.project_id}/registrations"
        weakref.finalize(self, self._loop.call_soon_threadsafe, self._pool.close)

    def _manage(
        self, tokens: Sequence[str], topic: str, *, subscribe: bool, give_up_at: float | None
    ) -> BatchResult:
        batch = check_batch(tokens)
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
        encoded_topic = quote(topic, safe="")
        answers: list[TokenAnswer] = [NOT_SENT] * len(batch)

        def request(token: str, head: str) -> bytes:
            path = f"{self._path_root}/{registration_segment(token)}/topicSubscriptions"
            if subscribe:
                line = f"POST {path}?topic_name={encoded_topic} HTTP/1.1\r\n"
                return (line + head).encode("latin-1") + b"{}"
            line = f"DELETE {path}/{encoded_topic}?allow_missing=true HTTP/1.1\r\n"
            return (line + head).encode("latin-1")

        async def one(index: int, token: str) -> None:
            answer = await self._send(request(token, head), subscribe, topic, give_up_at)
            if answer.reason == "UNAUTHENTICATED":
                # The token may have expired early: refresh once and try again, as
                # google-auth's session does for the SDK's own requests.
                self._auth.expire()
                fresh = await asyncio.to_thread(self._head, subscribe)
                answer = await self._send(request(token, fresh), subscribe, topic, give_up_at)
            answers[index] = answer

        await asyncio.gather(*(one(i, token) for i, token in enumerate(batch)))
        return answers

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
