"""HTTP for the emulator: one event loop serving every HTTP/1.1 keep-alive connection.

Why it exists: the emulator is exercised over real HTTP by real clients (firebase-admin opens
up to 100 keep-alive connections at once, topic-sync's own client 320), so socket concerns
live here and only here: a deep accept queue, chunked request bodies, `Expect:
100-continue`, one write per answer, answers cut short on purpose, and dropping open
connections on stop so clients notice at once. The server moves bytes; what to answer is
decided by the callable it is given. A request's latency is waited out on the loop, not in
a sleeping thread: with a thread per connection, every request cost the emulator a thread's
wake-ups and hand-overs of the interpreter lock, which at 3,000 requests/s took the CPU the
client under test needed. Only a step that may block (a trap's action) gets a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TypeVar

from topic_sync.emulator.replies import Later, Reply, error_reply

MAX_LINE = 65536  # http.server's limits on a request line and a header line...
MAX_FIELDS = 100  # ...and on the number of header lines
BACKLOG = 1024  # SDK callers open up to 100 connections at once, topic-sync's own 320
METHODS = frozenset({"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD"})
STOP_SECONDS = 5.0  # how long stop waits for the loop to let go
ENDING_TURNS = 10  # turns of the loop a stop gives connections to end on their own
ACCEPT_RETRY_SECONDS = 1.0  # after an accept failed (asyncio's server waits as long)

Answer = Callable[[str, str, bytes], Reply | Later]
"""(HTTP method, request target with its query string, body) -> the reply, or a Later."""

T = TypeVar("T")

wait_out = asyncio.sleep  # how a request waits out its latency (a test holds it by hand)


class _Refused(Exception):
    """A request this server will not read further: answered with an error, then closed."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class EmulatorServer:
    """Listens at construction (so its port is known at once); serve_forever() runs the loop
    in the calling thread until shutdown() is called from another."""

    def __init__(self, address: tuple[str, int], answer: Answer) -> None:
        self.answer = answer
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind(address)
            self._sock.listen(BACKLOG)
        except OSError:
            self._sock.close()
            raise
        self.server_address: tuple[str, int] = self._sock.getsockname()[:2]
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._finished = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    def serve_forever(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            with contextlib.suppress(Exception):
                self._loop.close()
            self._finished.set()

    def shutdown(self) -> None:
        """Stop listening, drop every open connection, and wait until the loop has ended."""
        with contextlib.suppress(RuntimeError):  # the loop has ended already
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._finished.wait(STOP_SECONDS)

    def server_close(self) -> None:
        self._sock.close()

    async def _serve(self) -> None:
        self._sock.setblocking(False)
        accepting = asyncio.create_task(self._accept())
        try:
            await self._stopping.wait()
        finally:
            accepting.cancel()
            await asyncio.gather(accepting, return_exceptions=True)
            await self._drop_connections()

    async def _drop_connections(self) -> None:
        """End every connection, its socket closed before the loop ends.

        Clients notice at once, mid-answer or idle: each connection's transport is aborted,
        and an idle one's read sees the end and its task ends on its own. One just accepted
        registers its writer in its task's first step (cancelled before that step, its
        socket would never be closed), so for a few turns the loop runs and each writer is
        aborted as it registers; what still runs then (a request waiting out its latency)
        is cancelled. A transport closes its socket in the loop's next turn, given last."""

        def others() -> list[asyncio.Task[object]]:
            return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

        for _ in range(ENDING_TURNS):
            for writer in list(self._writers):
                writer.transport.abort()
            if not others():
                break
            await asyncio.sleep(0)
        tasks = others()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)

    async def _accept(self) -> None:
        """Accept connections one by one until cancelled.

        asyncio's own server drops a connection its client closed before it was served
        without closing the socket (making its transport fails, and the error is swallowed);
        here the failure is seen and the socket closed. An accept that completes as the stop
        cancels this is closed too."""
        loop = asyncio.get_running_loop()
        while True:
            accepted = asyncio.ensure_future(loop.sock_accept(self._sock))
            try:
                conn, _ = await asyncio.shield(accepted)
            except asyncio.CancelledError:
                if not accepted.done():
                    accepted.cancel()
                elif not accepted.cancelled() and accepted.exception() is None:
                    accepted.result()[0].close()
                raise
            except OSError:  # out of file descriptors, say: as asyncio's server, try again
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            try:
                await loop.connect_accepted_socket(self._protocol, conn)
            except OSError:
                conn.close()  # the client went away before it was served

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=MAX_LINE), self._connection)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that went away mid-request (a timeout, a cut) is no emulator error
        finally:
            self._writers.discard(writer)
            writer.close()  # what was written still goes out first

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read one request and write its answer; whether the connection stays open."""
        try:
            line = await _line(reader, HTTPStatus.REQUEST_URI_TOO_LONG, "Request-URI Too Long")
            if not line:
                return False  # the client closed the connection between requests
            command, target, version = _request_line(line)
            fields = await _fields(reader)
            if command not in METHODS:  # checked after the fields, as http.server does
                raise _Refused(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({command!r})")
        except _Refused as refused:
            writer.write(_error(refused.status, refused.message))
            await writer.drain()
            return False
        keep_open = version == "HTTP/1.1"
        connection = fields.get("connection", "").lower()
        if connection in ("close", "keep-alive"):
            keep_open = connection == "keep-alive"
        if fields.get("expect", "").lower() == "100-continue" and version == "HTTP/1.1":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = await _body(reader, fields)
        except ValueError:
            keep_open = False
            reply = error_reply(400, "INVALID_ARGUMENT", "Malformed request body.")
        else:
            reply = await self._reply(command, target, body)
        writer.write(_head(reply) + (b"" if command == "HEAD" else _body_of(reply)))
        await writer.drain()
        return keep_open and reply.cut is None

    async def _reply(self, command: str, target: str, body: bytes) -> Reply:
        try:
            answer = self.answer(command, target, body)
            while isinstance(answer, Later):
                if answer.after > 0:
                    await wait_out(answer.after)
                if answer.blocking:
                    answer = await _in_thread(answer.then)
                else:
                    answer = answer.then()
        except Exception as exc:  # keep the connection answering; surface the bug
            return error_reply(500, "INTERNAL", f"emulator error: {exc!r}")
        return answer


async def _in_thread(step: Callable[[], T]) -> T:
    """`step` in a thread of its own (a trap's action may wait for anything, another
    request to this emulator included, so it never waits for a free worker)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # the request was cancelled meanwhile (a stop)
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        failed: BaseException | None = None
        try:
            result = step()
        except BaseException as error:  # handed to the waiting request
            failed = error
        with contextlib.suppress(RuntimeError):  # the loop ended meanwhile (a stop)
            loop.call_soon_threadsafe(settle, result, failed)

    threading.Thread(target=run, name="fcm-emulator-step", daemon=True).start()
    return await done


async def _line(reader: asyncio.StreamReader, status: HTTPStatus, message: str) -> bytes:
    """One line with its end (b"" at the end of the stream); a longer one than http.server
    reads is refused with `status`."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _Refused(status, message) from None
    except asyncio.IncompleteReadError as error:
        return error.partial


def _request_line(line: bytes) -> tuple[str, str, str]:
    """(method, target, HTTP version), as http.server reads them."""
    requestline = str(line, "iso-8859-1").rstrip("\r\n")
    words = requestline.split()
    if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise _Refused(HTTPStatus.BAD_REQUEST, f"Bad request line ({requestline!r})")
    command, target, version = words
    # As http.server does (gh-87389): '//host/path' would read as another host's URL.
    target = "/" + target.lstrip("/") if target.startswith("//") else target
    return command, target, version


async def _fields(reader: asyncio.StreamReader) -> dict[str, str]:
    """The header fields by lower-case name (the first of a repeated one), read as
    http.server checks them but without its email-package parser (80 µs a request)."""
    fields: dict[str, str] = {}
    for _ in range(MAX_FIELDS + 1):
        line = await _line(reader, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
        if line in (b"\r\n", b"\n", b""):
            return fields
        name, colon, value = str(line, "iso-8859-1").partition(":")
        if colon:
            fields.setdefault(name.strip().lower(), value.strip())
    raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")


async def _body(reader: asyncio.StreamReader, fields: dict[str, str]) -> bytes:
    """The request body, chunked or of a Content-Length; ValueError if malformed."""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while await reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readline()
    length = int(fields.get("content-length") or 0)
    return await reader.readexactly(length) if length > 0 else b""


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


def _head(reply: Reply) -> bytes:
    lines = [_status_line(reply.status)]
    if reply.content_type is not None:
        lines.append(f"Content-Type: {reply.content_type}\r\n".encode("latin-1"))
    lines.append(f"Content-Length: {len(reply.body)}\r\n".encode("latin-1"))
    lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in reply.headers)
    lines.append(b"\r\n")
    return b"".join(lines)


def _body_of(reply: Reply) -> bytes:
    """The body as sent: an answer cut short is the length promised, part of the body, the
    end of the connection."""
    return reply.body if reply.cut is None else reply.body[: reply.cut]


def _error(status: HTTPStatus, message: str) -> bytes:
    """An error page as http.server sends one (its status, its HTML), closing."""
    page = BaseHTTPRequestHandler.error_message_format % {
        "code": status.value,
        "message": _html(message),
        "explain": _html(status.description),
    }
    body = page.encode("utf-8", "replace")
    head = (
        _status_line(status.value)
        + b"Server: fcm-emulator\r\nConnection: close\r\n"
        + f"Content-Type: {BaseHTTPRequestHandler.error_content_type}\r\n".encode("latin-1")
        + f"Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
    )
    return head + body


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
