"""The v1-direct transport's own HTTP/1.1 client behind an egress proxy, over real sockets.

A small proxy of our own (CONNECT tunnels and plain forwarding, as common egress proxies do)
records what it was asked; the proxy is chosen by requests' own rules (HTTPS_PROXY,
HTTP_PROXY, NO_PROXY), as the SDK's publish chooses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import firebase_admin
import pytest

from topic_sync.emulator import FcmEmulator
from topic_sync.errors import BadInput
from topic_sync.fcm.http1 import LoopThread, Pool, Proxy, ProxyRefused
from topic_sync.fcm.transports import make_client

TOPIC = "jobreco-1"


@dataclass
class LocalProxy:
    """An HTTP proxy on 127.0.0.1: CONNECT opens a tunnel, an absolute URL is forwarded."""

    refuse: bool = False
    asked: list[str] = field(default_factory=list)  # CONNECT authorities, forwarded URLs
    authorizations: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket | http.client.HTTPConnection] = []
        threading.Thread(target=_serve_each, args=(self._server, self._serve), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Close the listener and every connection it made, so no thread outlives a test."""
        self._server.close()
        with self._lock:
            for held in self._open:
                held.close()

    def _keep(self, held: socket.socket | http.client.HTTPConnection) -> None:
        with self._lock:
            self._open.append(held)

    def _note(self, asked: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.asked.append(asked)
            self.authorizations.append(headers.get("proxy-authorization"))

    def _serve(self, conn: socket.socket) -> None:
        self._keep(conn)
        with contextlib.suppress(OSError, ValueError):  # closed under it at a test's end
            self._relay(conn)

    def _relay(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as rfile:
            origin: http.client.HTTPConnection | None = None
            while True:
                line = rfile.readline()
                if not line:
                    return
                method, target, _version = line.decode("latin-1").split(" ", 2)
                headers = _headers(rfile)
                if method == "CONNECT":
                    self._note(target, headers)
                    if self.refuse:
                        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                        return
                    host, _, port = target.rpartition(":")
                    upstream = socket.create_connection((host, int(port)))
                    self._keep(upstream)
                    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    _pipe(conn, rfile, upstream)
                    return
                self._note(target, headers)
                body = rfile.read(int(headers.get("content-length", "0")))
                scheme, _, rest = target.partition("://")
                authority, _, path = rest.partition("/")
                if origin is None:
                    origin = http.client.HTTPConnection(authority, timeout=10)
                    self._keep(origin)
                sent = {k: v for k, v in headers.items() if not k.startswith("proxy-")}
                origin.request(method, "/" + path, body=body, headers=sent)
                answer = origin.getresponse()
                data = answer.read()
                head = f"HTTP/1.1 {answer.status} {answer.reason}\r\n"
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        head += f"{name}: {value}\r\n"
                head += f"Content-Length: {len(data)}\r\n\r\n"
                conn.sendall(head.encode("latin-1") + data)


def _serve_each(server: socket.socket, serve: Callable[[socket.socket], None]) -> None:
    """Accept connections until the listener is closed; serve each in a thread of its own."""
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _headers(rfile: object) -> dict[str, str]:
    headers: dict[str, str] = {}
    while True:
        line = rfile.readline()  # type: ignore[attr-defined]
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


def _pipe(conn: socket.socket, rfile: object, upstream: socket.socket) -> None:
    """Relay bytes both ways until either side closes (what the client buffered first)."""

    def back() -> None:
        # Ends when either side closes; the other direction may close upstream under it.
        with upstream, contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                conn.sendall(data)

    threading.Thread(target=back, daemon=True).start()
    buffered = rfile.peek() if hasattr(rfile, "peek") else b""  # type: ignore[attr-defined]
    if buffered:
        upstream.sendall(rfile.read(len(buffered)))  # type: ignore[attr-defined]
    try:
        while data := conn.recv(65536):
            upstream.sendall(data)
    except OSError:
        pass
    upstream.close()


@pytest.fixture
def proxy() -> Iterator[LocalProxy]:
    local = LocalProxy()
    yield local
    local.close()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


# ------------------------------------------------------------------ the transport, end to end


def test_v1_direct_goes_through_the_proxy_requests_would_use(
    fcm_app: firebase_admin.App, emulator: FcmEmulator, proxy: LocalProxy, no_proxy_env
) -> None:
    no_proxy_env.setenv("HTTP_PROXY", proxy.url)
    client = make_client(fcm_app, "v1-direct")

    result = client.subscribe(["tok-a", "tok-b"], TOPIC)

    assert result.reasons == (None, None) and result.proven == (True, True)
    assert emulator.members(TOPIC) == {"tok-a", "tok-b"}
    root = f"http://{emulator.host_port}/v1/projects/demo-test/registrations"
    assert sorted(proxy.asked) == [
        f"{root}/tok-a/topicSubscriptions?topic_name={TOPIC}",
        f"{root}/tok-b/topicSubscriptions?topic_name={TOPIC}",
    ]


def test_no_proxy_names_the_host_so_v1_direct_connects_directly(
    fcm_app: firebase_admin.App, emulator: FcmEmulator, proxy: LocalProxy, no_proxy_env
) -> None:
    no_proxy_env.setenv("HTTP_PROXY", proxy.url)
    no_proxy_env.setenv("NO_PROXY", "localhost,127.0.0.1")
    client = make_client(fcm_app, "v1-direct")

    assert client.unsubscribe(["tok-a"], TOPIC).proven == (True,)
    assert proxy.asked == []


def test_a_proxy_of_a_kind_v1_direct_does_not_speak_is_bad_input(
    fcm_app: firebase_admin.App, no_proxy_env
) -> None:
    no_proxy_env.setenv("HTTP_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(BadInput, match="http:// proxies only"):
        make_client(fcm_app, "v1-direct")


# ------------------------------------------------------------------ https through a tunnel


@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, ssl.SSLContext]]:
    """An https origin on localhost with a self-signed certificate, answering `{}` to every
    request; and a client context that trusts that certificate."""
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], ssl.create_default_context(cafile=str(cert))
    server.shutdown()
    server.server_close()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _post(pool: Pool, count: int) -> list[int]:
    request = (
        f"POST /v1/x HTTP/1.1\r\nHost: {pool.host_header}\r\nContent-Length: 2\r\n\r\n{{}}"
    ).encode()

    async def send() -> list[int]:
        statuses = []
        try:
            for _ in range(count):
                async with pool.turn():
                    statuses.append((await pool.request(request, 10)).status)
        finally:
            pool.close()
        return statuses

    # On the transport's own long-lived loop, which finishes closing what it closed (a TLS
    # close takes a few turns of the loop after the call returns).
    return asyncio.run_coroutine_threadsafe(send(), LoopThread.loop()).result(30)


def test_https_goes_through_a_connect_tunnel_and_reuses_it(tls_origin, proxy) -> None:
    port, trust = tls_origin
    pool = Pool(f"https://localhost:{port}", 4, Proxy.of(proxy.url), ssl_context=trust)

    assert _post(pool, 3) == [200, 200, 200]
    assert proxy.asked == [f"localhost:{port}"]  # one tunnel, TLS to the origin inside it
    assert pool.target_prefix == ""  # inside a tunnel the request names only the path


def test_the_proxy_credentials_in_its_url_are_sent_to_it(tls_origin, proxy) -> None:
    port, trust = tls_origin
    pool = Pool(
        f"https://localhost:{port}", 1, Proxy.of(f"http://ops:s%3Acret@127.0.0.1:{proxy.port}")
    )
    pool = Pool(f"https://localhost:{port}", 1, pool.proxy, ssl_context=trust)

    assert _post(pool, 1) == [200]
    assert proxy.authorizations == ["Basic b3BzOnM6Y3JldA=="]  # base64 of "ops:s:cret"


def test_a_tunnel_the_proxy_refuses_is_an_error_not_an_answer(tls_origin, proxy) -> None:
    port, trust = tls_origin
    proxy.refuse = True
    pool = Pool(f"https://localhost:{port}", 1, Proxy.of(proxy.url), ssl_context=trust)

    with pytest.raises(ProxyRefused, match="403 Forbidden"):
        _post(pool, 1)


# ------------------------------------------------------------------ connections opened ahead


def _warm(pool: Pool, count: int) -> int:
    return asyncio.run_coroutine_threadsafe(pool.warm(count, 10), LoopThread.loop()).result(30)


def test_connections_opened_ahead_are_the_ones_requests_use(tls_origin, proxy) -> None:
    port, trust = tls_origin
    pool = Pool(f"https://localhost:{port}", 4, Proxy.of(proxy.url), ssl_context=trust)

    assert _warm(pool, 3) == 3
    assert len(proxy.asked) == 3  # three tunnels, opened before any request
    assert _post(pool, 3) == [200, 200, 200]
    assert len(proxy.asked) == 3  # no request opened one of its own


def test_opening_ahead_never_holds_more_connections_than_the_pool(tls_origin, proxy) -> None:
    port, trust = tls_origin
    pool = Pool(f"https://localhost:{port}", 2, Proxy.of(proxy.url), ssl_context=trust)

    assert _warm(pool, 5) == 2
    assert _warm(pool, 5) == 0  # two are idle already: nothing more is opened
    assert len(proxy.asked) == 2
    assert _post(pool, 2) == [200, 200]
    assert len(proxy.asked) == 2


def test_a_closed_pool_opens_nothing_ahead(tls_origin, proxy) -> None:
    # The command ended (its transport let go) before the plan did: nothing stays open.
    port, trust = tls_origin
    pool = Pool(f"https://localhost:{port}", 4, Proxy.of(proxy.url), ssl_context=trust)
    pool.close()

    assert _warm(pool, 3) == 0
    assert proxy.asked == []


class _ClosesFirst:
    """A plain-http origin that closes its first connection unanswered (a server letting an
    idle connection go) and answers `{}` on every later one; it counts connections."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.accepted = 0
        self.first_closed = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=_serve_each, args=(self._server, self._answer), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with self._lock:
            self.accepted += 1
            first = self.accepted == 1
        if first:
            conn.close()
            self.first_closed.set()
            return
        with conn, conn.makefile("rb") as rfile, contextlib.suppress(OSError, ValueError):
            while rfile.readline():
                headers = _headers(rfile)
                rfile.read(int(headers.get("content-length", "0")))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    def close(self) -> None:
        self._server.close()


def test_a_connection_closed_while_it_waited_is_replaced_not_failed() -> None:
    # A connection opened ahead waits through the plan; the server may let it go meanwhile.
    # The request goes on a new connection instead of failing its token.
    origin = _ClosesFirst()
    try:
        pool = Pool(f"http://127.0.0.1:{origin.port}", 2)
        assert _warm(pool, 1) == 1
        assert origin.first_closed.wait(10)
        assert _post(pool, 2) == [200, 200]
        assert origin.accepted == 2
    finally:
        origin.close()
