"""A lean keep-alive HTTP/1.1 client on asyncio, for the v1-direct transport.

Persistent connections to one origin, reused; content-length, chunked and close-delimited
bodies; gzip/deflate decoding; never follows a redirect. Behind an egress proxy it goes as
requests goes (the proxy is chosen by requests' own rules, HTTPS_PROXY / HTTP_PROXY /
NO_PROXY, by the caller: sdk_bridge.DirectAuth.proxy_for): an https origin through a CONNECT
tunnel (TLS to the origin inside it), an http origin by sending the absolute URL to the proxy.
A kept library was measured first (bench/RESULTS.md): none stayed within the CPU per request
this transport exists for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import urllib3

from topic_sync.errors import BadInput

MAX_HEAD_BYTES = 1 << 16


class ProxyRefused(ConnectionError):
    """The proxy would not open a tunnel to the origin (its status line is the message)."""


def _default_port(https: bool) -> int:
    return 443 if https else 80


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy (http://[user:password@]host:port), as HTTPS_PROXY names one."""

    host: str
    port: int
    authorization: str | None = None  # the Proxy-Authorization value, from the URL's userinfo

    @classmethod
    def of(cls, url: str) -> Proxy:
        """The proxy a URL names; BadInput for a kind this client does not speak."""
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            raise BadInput(
                f"proxy {parts.scheme}://{parts.hostname or ''} (from HTTPS_PROXY, HTTP_PROXY "
                "or ALL_PROXY): the v1-direct transport reaches FCM through http:// proxies "
                "only; name the proxy as http://HOST:PORT, or use --transport v1"
            )
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return cls(parts.hostname, parts.port or 80, authorization)


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
        self.reusable = True

    async def exchange(self, request: bytes) -> Answer:
        try:
            self.writer.write(request)
            await self.writer.drain()
        except ConnectionError:
            self.reusable = False
            raise _Dropped from None  # closed under the request: no answer began
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


class Pool:
    """Up to `size` connections to one origin, reused, directly or through a proxy; lives on
    the event loop."""

    def __init__(
        self,
        base: str,
        size: int,
        proxy: Proxy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base)
        self.https = parts.scheme == "https"
        self.hostname = parts.hostname or ""
        self.port = parts.port or _default_port(self.https)
        # The Host header as http.client writes it (no port when it is the default one).
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        self.host_header = host if self.port == _default_port(self.https) else f"{host}:{self.port}"
        self.proxy = proxy
        # Through a proxy, a plain-http request names the whole URL (a tunnel is opened
        # for https only, as requests does).
        forward = proxy is not None and not self.https
        self.target_prefix = f"http://{self.host_header}" if forward else ""
        self._size = size
        self._idle: list[_Connection] = []
        self._slots: asyncio.Semaphore | None = None
        self._ssl: ssl.SSLContext | None = ssl_context
        self._closed = False

    def turn(self) -> asyncio.Semaphore:
        """Held for the whole of one request, from pacing to answer: a request decides to go
        (deadline, pace) only once it has a connection, so nothing is booked far ahead."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        return self._slots

    async def request(self, request: bytes, timeout: float) -> Answer:
        """Send on an idle or new connection; the caller holds a turn."""
        # A connection the server closed while it was idle in the pool answers nothing at
        # all: the request is sent again on a fresh one (both topic calls are idempotent).
        for _attempt in range(2):
            conn = self._take_idle()
            fresh = conn is None
            try:
                async with asyncio.timeout(timeout):
                    if conn is None:
                        conn = await self._connect()
                    answer = await conn.exchange(request)
            except _Dropped:
                assert conn is not None
                conn.close()
                if fresh:
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

    def _take_idle(self) -> _Connection | None:
        """An idle connection the server has not closed meanwhile (as far as is known yet)."""
        while self._idle:
            conn = self._idle.pop()
            if not (conn.writer.is_closing() or conn.reader.at_eof()):
                return conn
            conn.close()
        return None

    async def warm(self, count: int, timeout: float) -> int:
        """Open up to `count` connections before the requests that will use them (returns how
        many opened). Each is opened in a turn of its own and only while none is idle, as a
        request opens one, so the pool never holds more than its size; one that cannot be
        opened is left to the requests, which meet the failure themselves."""

        async def one() -> bool:
            async with self.turn():
                if self._idle or self._closed:
                    return False  # one is free already (an earlier warm's), or none is wanted
                try:
                    async with asyncio.timeout(timeout):
                        conn = await self._connect()
                except (OSError, EOFError, ValueError, asyncio.LimitOverrunError):  # timeouts too
                    return False
                if self._closed:  # the command ended while it was opened
                    conn.close()
                    return False
                self._idle.append(conn)
                return True

        return sum(await asyncio.gather(*(one() for _ in range(count))))

    async def _connect(self) -> _Connection:
        context = None
        if self.https:
            if self._ssl is None:
                import certifi  # the CA bundle the SDK's session (requests) verifies against

                self._ssl = ssl.create_default_context(cafile=certifi.where())
            context = self._ssl
        if self.proxy is None:
            reader, writer = await asyncio.open_connection(
                self.hostname,
                self.port,
                ssl=context,
                server_hostname=self.hostname if context else None,
                limit=MAX_HEAD_BYTES,
            )
        else:
            reader, writer = await asyncio.open_connection(
                self.proxy.host, self.proxy.port, limit=MAX_HEAD_BYTES
            )
            if context is not None:
                try:
                    await self._tunnel(reader, writer)
                    await writer.start_tls(context, server_hostname=self.hostname)
                except BaseException:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
                    raise
        sock = writer.get_extra_info("socket")
        if sock is not None:
            import socket

            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(reader, writer)

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Ask the proxy for a tunnel to the origin (CONNECT), as urllib3 asks for one."""
        assert self.proxy is not None
        authority = f"{self.hostname}:{self.port}"
        if ":" in self.hostname:
            authority = f"[{self.hostname}]:{self.port}"
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if self.proxy.authorization:
            head += f"Proxy-Authorization: {self.proxy.authorization}\r\n"
        writer.write((head + "\r\n").encode("latin-1"))
        await writer.drain()
        answer = await reader.readuntil(b"\r\n\r\n")
        status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].startswith("2"):
            raise ProxyRefused(f"the proxy refused a tunnel to {authority}: {status_line}")

    def close(self) -> None:
        """Close the idle connections, and any still being opened ahead once it is open."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


class LoopThread:
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
