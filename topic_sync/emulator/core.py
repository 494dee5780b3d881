"""The emulator's one entry point: `FcmEmulator`, and `serve()` to run one in the foreground."""

from __future__ import annotations

import ipaddress
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from topic_sync.emulator.api import MAX_BATCH_TOKENS, MAX_MESSAGE_BYTES, FcmApi
from topic_sync.emulator.control import PREFIX as _CONTROL_PREFIX
from topic_sync.emulator.control import handle_control
from topic_sync.emulator.faults import Faults
from topic_sync.emulator.limits import MAX_TOPICS_PER_TOKEN
from topic_sync.emulator.replies import REASON_WIRE, Later, Reply
from topic_sync.emulator.server import EmulatorServer
from topic_sync.emulator.shapes import SHAPES, Canned
from topic_sync.emulator.state import FcmState, Publish

__all__ = [
    "SHAPES",
    "Canned",
    "MAX_BATCH_TOKENS",
    "MAX_MESSAGE_BYTES",
    "MAX_TOPICS_PER_TOKEN",
    "REASON_WIRE",
    "FcmEmulator",
    "Publish",
    "is_loopback",
    "serve",
]


class FcmEmulator:
    """In-memory FCM with real per-token subscription state and injectable faults."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()  # guards _state and _faults, here and in _api
        self._state = FcmState()
        self._faults = Faults()
        self._api = FcmApi(self._lock, self._state, self._faults)
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FcmEmulator:
        """Listen and serve in a daemon thread; returns self so it can be chained."""
        if self._server is not None:
            return self
        server = EmulatorServer((self._host, self._port), self._handle)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"fcm-emulator-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections so clients notice at once."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FcmEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def _dial_host(self) -> str:
        """The host clients dial: a wildcard address is reached on the loopback."""
        return self._host if self._host not in ("", "0.0.0.0", "::") else "127.0.0.1"

    @property
    def host_port(self) -> str:
        """``host:port`` as clients should dial it (the FCM_EMULATOR_HOST value)."""
        host = self._dial_host
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host_port}"

    # ----------------------------------------------------------------- faults

    def inject_token_error(
        self, token: str, reason: str, op: str = "both", times: int | None = None
    ) -> None:
        """Make ``op`` on ``token`` fail with raw reason ``reason``.

        ``times=None`` fails until cleared; ``times=N`` fails the next N attempts (the SDK's
        own retries on 500/503 count as attempts). The newest injection wins.
        """
        with self._lock:
            self._faults.inject_token_error(token, reason, op, times)

    def inject_request_errors(
        self,
        status: int,
        *,
        count: int | None = None,
        rate: float | None = None,
        retry_after: float | None = None,
        seed: int = 0,
        kinds: Iterable[str] | None = None,
        served: bool = False,
    ) -> None:
        """Fail whole FCM requests with ``status`` (without FCM's error details).

        ``rate`` picks a fraction of requests with a seeded RNG (deterministic for a given
        request order); ``count`` caps how many fail in all. With neither, every request fails
        until cleared. ``retry_after`` adds a ``Retry-After`` header (whole seconds).
        ``kinds`` limits the fault to those requests (``send``, ``subscribe``,
        ``batchRemove``, ...). ``served`` serves the request first and answers the error
        after, as a front end that timed out on a request FCM carried out.
        """
        with self._lock:
            self._faults.inject_request_errors(
                status,
                count=count,
                rate=rate,
                retry_after=retry_after,
                seed=seed,
                kinds=kinds,
                served=served,
            )

    def inject_answer(
        self,
        answer: str | Canned,
        *,
        status: int | None = None,
        kinds: Iterable[str] | None = None,
        tokens: Iterable[str] | None = None,
        count: int | None = None,
        served: bool = False,
    ) -> None:
        """Answer FCM requests with a strange answer instead of FCM's own.

        ``answer`` is a shape of the fault menu (``SHAPES``: ``html``, ``empty``, ``text``,
        ``json-error``, ``json-list``, ``json-null``, ``string-error``, ``redirect``, ``cut``;
        for legacy batches ``short-results``, ``empty-results``, ``long-results``,
        ``no-results``, ``results-not-list``, ``non-object-results``; for sends ``no-name``,
        ``null-name``), built for the request it answers, with ``status`` replacing the
        shape's own; or a ``Canned`` answer given byte for byte. ``kinds`` limits it to those
        requests, ``tokens`` to requests about any of those tokens, ``count`` to that many
        requests (None: until cleared). ``served`` serves the request first (FCM did the
        work) and answers strangely after. The newest injection a request meets wins; whole-
        request errors (inject_request_errors) are met first.
        """
        with self._lock:
            self._faults.inject_answer(
                answer, status=status, kinds=kinds, tokens=tokens, count=count, served=served
            )

    def add_trap(
        self, kind: str, nth: int, action: Callable[[], object], *, after: bool = False
    ) -> None:
        """Call ``action`` (e.g. kill the client) when the ``nth`` request of ``kind`` from now
        arrives: before serving it (it never takes effect) or after (it took effect, but its
        answer goes to whoever is still listening). For deterministic crash tests."""
        with self._lock:
            self._faults.add_trap(kind, nth, action, after)

    def set_quota(
        self,
        requests_per_second: float | None,
        *,
        window: str = "bucket",
        retry_after: float | None = None,
        retry_delay: float | None = None,
    ) -> None:
        """Rate-limit topic management (v1 request = 1, legacy batch = its token count).

        ``window``: ``"bucket"`` (a token bucket holding one second's worth: a burst, then
        the rate) or ``"sliding"`` (at most the rate in any one second). Each 429 carries a
        ``Retry-After`` header of ``retry_after`` seconds (whole), and a RetryInfo detail of
        ``retry_delay`` seconds, when given; ``None`` clears the quota.
        """
        with self._lock:
            self._faults.set_quota(
                requests_per_second,
                window=window,
                retry_after=retry_after,
                retry_delay=retry_delay,
            )

    def set_api_disabled(self, disabled: bool = True) -> None:
        """Answer every FCM request as Google does when the Firebase Cloud Messaging API is
        not enabled for the project (403 PERMISSION_DENIED, ErrorInfo SERVICE_DISABLED)."""
        with self._lock:
            self._faults.set_api_disabled(disabled)

    def set_latency(self, seconds: float) -> None:
        """Sleep this long in every FCM request (outside the lock, so requests overlap)."""
        with self._lock:
            self._faults.set_latency(seconds)

    def unregister(self, token: str) -> None:
        """Kill a token: FCM forgets its subscriptions and answers NOT_FOUND from now on."""
        with self._lock:
            self._state.unregister(token)

    def clear_faults(self) -> None:
        """Drop token/request faults, strange answers, quota, latency and a disabled API;
        unregistered tokens stay dead."""
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget everything: subscriptions, unregistered tokens, faults, records, stats."""
        with self._lock:
            self._state.clear()
            self._faults.clear()

    def _clear_request_errors(self) -> None:
        """Disarm whole-request errors only (the control API's ``"request_errors": null``)."""
        with self._lock:
            self._faults.clear_request_errors()

    def _clear_answers(self) -> None:
        """Disarm strange answers only (the control API's ``"answers": null``)."""
        with self._lock:
            self._faults.clear_answers()

    # ----------------------------------------------------------------- inspection

    def members(self, topic: str) -> set[str]:
        with self._lock:
            return set(self._state.members.get(topic, ()))

    def topics_of(self, token: str) -> set[str]:
        with self._lock:
            return set(self._state.subs.get(token, ()))

    @property
    def publishes(self) -> list[Publish]:
        with self._lock:
            return list(self._state.publishes)

    @property
    def validations(self) -> list[Publish]:
        """validate_only sends, kept apart so they can never be mistaken for a publish."""
        with self._lock:
            return list(self._state.validations)

    @property
    def stats(self) -> Counter[tuple[str, int]]:
        """Requests served, keyed by (kind, HTTP status)."""
        with self._lock:
            return Counter(self._state.stats)

    def subscribe_direct(self, token: str, topic: str) -> None:
        """Subscribe behind the client's back (no checks, no faults, no quota)."""
        with self._lock:
            if not self._state.is_subscribed(token, topic):
                self._state.add(token, topic, time.time())

    def unsubscribe_direct(self, token: str, topic: str) -> None:
        """Unsubscribe behind the client's back."""
        with self._lock:
            self._state.remove(token, topic)

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot, as served by ``GET /emulator/state``."""
        with self._lock:
            return self._state.snapshot()

    # ----------------------------------------------------------------- HTTP

    def _handle(self, method: str, target: str, body: bytes) -> Reply | Later:
        """Answer one HTTP request: the control API, or FCM's own."""
        path, _, query = target.partition("?")
        if path.startswith(_CONTROL_PREFIX):
            return handle_control(self, method, path, body)
        return self._api.handle(method, path, query, body)


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    host: str = "127.0.0.1",
    port: int = 9099,
    ready: Callable[[FcmEmulator], object] | threading.Event | None = None,
) -> None:
    """Run an emulator in the foreground until SIGTERM, SIGINT or KeyboardInterrupt.

    ``ready`` is called with the started emulator (or set, if it is an Event), e.g. so a
    caller using port 0 can learn the port.
    """
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    emulator = FcmEmulator(host, port).start()
    try:
        if isinstance(ready, threading.Event):
            ready.set()
        elif ready is not None:
            ready(emulator)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
