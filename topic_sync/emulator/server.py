"""HTTP for the emulator: a threaded HTTP/1.1 keep-alive server.

Why it exists: the emulator is exercised over real HTTP by real clients (firebase-admin opens
up to 100 keep-alive connections at once), so socket concerns live here and only here: a deep
accept queue, no reverse DNS at start-up, chunked request bodies, one buffered write per
answer, and dropping open connections on stop so clients notice at once. The server moves
bytes; what to answer is decided by the callable it is given.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from topic_sync.emulator.replies import Reply, error_reply

MAX_LINE = 65536  # http.server's limits on a request line and a header line...
MAX_FIELDS = 100  # ...and on the number of header lines

Answer = Callable[[str, str, bytes], Reply]
"""(HTTP method, request target with its query string, body) -> the reply."""


class EmulatorServer(ThreadingHTTPServer):
    """One thread per connection; remembers open connections so stop() can drop them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # SDK callers open up to 100 connections at once

    def __init__(self, address: tuple[str, int], answer: Answer) -> None:
        self.answer = answer
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer's reverse DNS lookup (getfqdn), which can stall start-up.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a timeout, a cut answer) is no emulator error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Lean HTTP/1.1 keep-alive handler: one buffered write per response, no logging."""

    protocol_version = "HTTP/1.1"
    server_version = "fcm-emulator"
    sys_version = ""
    wbufsize = 1 << 16  # flushed once per request by handle_one_request
    disable_nagle_algorithm = True
    server: EmulatorServer

    fields: dict[str, str]  # the request's header fields, by lower-case name
    raw_requestline: bytes  # set by handle_one_request

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def parse_request(self) -> bool:
        """The request line and header fields, as http.server checks them, but the fields
        read into a dict: http.server parses them with the email package, about 80 µs a
        request, a quarter of a CPU at the 3,000 requests/s a benchmark sends."""
        self.command = ""
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if not words:
            return False
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request line ({self.requestline!r})")
            return False
        self.command, path, self.request_version = words
        self.close_connection = self.request_version == "HTTP/1.0"
        # As http.server does (gh-87389): '//host/path' would read as another host's URL.
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        self.fields = {}
        for _ in range(MAX_FIELDS + 1):
            line = self.rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = str(line, "iso-8859-1").partition(":")
            if colon:
                self.fields.setdefault(name.strip().lower(), value.strip())
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        connection = self.fields.get("connection", "").lower()
        if connection in ("close", "keep-alive"):
            self.close_connection = connection == "close"
        expect = self.fields.get("expect", "").lower()
        if expect == "100-continue" and self.request_version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, *args: Any) -> None:
        pass

    def handle_expect_100(self) -> bool:
        ok = super().handle_expect_100()
        self.wfile.flush()
        return ok

    def _read_body(self) -> bytes:
        if "chunked" in self.fields.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.fields.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            reply = error_reply(400, "INVALID_ARGUMENT", "Malformed request body.")
        else:
            try:
                reply = self.server.answer(self.command, self.path, body)
            except Exception as exc:  # keep the connection answering; surface the bug
                reply = error_reply(500, "INTERNAL", f"emulator error: {exc!r}")
        self.send_response_only(reply.status)
        if reply.content_type is not None:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            # An answer cut short: the length promised, part of the body, the end.
            self.wfile.write(reply.body if reply.cut is None else reply.body[: reply.cut])
        if reply.cut is not None:
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _serve
