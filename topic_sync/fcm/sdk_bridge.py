"""Everything topic-sync relies on inside firebase-admin, in one small place.

firebase-admin hard-codes Google's hosts. To rehearse against the local
emulator we keep the SDK's own request code (methods, paths, query strings,
bodies, error parsing) and only swap the transport adapter under its HTTP
session: the adapter rewrites `https://fcm.googleapis.com` and
`https://iid.googleapis.com` to `http://FCM_EMULATOR_HOST`. The same adapter
also sets the HTTP-level retry policy in production, so both paths behave alike.
`tests/test_sdk_bridge.py` fails loudly if an SDK upgrade moves any of this.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import firebase_admin
import google.auth.credentials
import requests
import requests.adapters
from firebase_admin import _http_client, credentials, messaging
from urllib3.util import retry as urllib3_retry

from topic_sync.fcm.answers import (
    NO_ANSWER,
    RawAnswer,
    TokenAnswer,
    has_fcm_details,
    read_topic_answer,
)
from topic_sync.fcm.pacer import Pacer
from topic_sync.fcm.wire import RETRY_INFO_TYPE

FCM_HOST = "https://fcm.googleapis.com"
IID_HOST = "https://iid.googleapis.com"
__all__ = ["has_fcm_details"]  # re-exported: callers read FCM's answers through this module too

SDK_POOL_SIZE = 100  # firebase-admin fans a v1 call out over up to 100 threads
HTTP_TIMEOUT_SECONDS = 30.0  # connect and read timeout of every request to FCM, any transport


class _EmulatorAuth(google.auth.credentials.Credentials):
    """A fixed bearer token: the emulator accepts any, and no key is needed."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.token = "owner"

    def refresh(self, request: object) -> None:  # nothing to fetch
        self.token = "owner"


class EmulatorCredential(credentials.Base):  # type: ignore[misc]
    def get_credential(self) -> google.auth.credentials.Credentials:
        return _EmulatorAuth()


# Characters quote(..., safe="") leaves as they are, and ':' (which it writes %3A): the whole
# FCM token alphabet, so a real token's segment is one replace, not quote's loop over every
# character (a twentieth of the default transport's event loop at 3,000 requests/s).
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_.~:\-]*")


def registration_segment(token: str) -> str:
    """A registration token as one URL path segment, as the SDK encodes it.

    Every character but the unreserved ones is percent-encoded, '/' included; the token
    alphabet (audience.TOKEN_RE) needs a letter or digit, so '.' and '..' never occur.
    """
    if _PLAIN_SEGMENT.fullmatch(token):
        return token.replace(":", "%3A")
    return quote(token, safe="")


@dataclass(frozen=True)
class TopicRequest:
    """One v1 subscribe or unsubscribe request, as read back from its URL beneath the SDK."""

    subscribe: bool
    token: str
    topic: str


class Evidence:
    """What FCM answered, noted beneath the SDK, which folds an answer into a reason string (or
    into nothing at all, for a 2xx) and drops the rest.

    A legacy batch and a send are made in the caller's thread: their raw answer waits in a
    slot of that thread. The SDK fans a v1 call out over threads of its own, which carry
    nothing of the caller's: each v1 answer, read by the evidence rule
    (answers.read_topic_answer), waits under its request. The client takes what it needs
    after the call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[TopicRequest, TokenAnswer] = {}
        self._thread = threading.local()

    def note(self, request: TopicRequest, answer: TokenAnswer) -> None:
        with self._lock:
            self._seen[request] = answer

    def forget(self, requests_: Sequence[TopicRequest]) -> None:
        """Drop what was noted for these requests: a batch starts from no answer at all, so a
        request that gets none this time cannot be read by an earlier attempt's answer."""
        with self._lock:
            for request in requests_:
                self._seen.pop(request, None)

    def take(self, request: TopicRequest) -> TokenAnswer | None:
        """The answer noted for a request, forgotten as it is taken; None if none came (the
        request got no answer at all, or was never sent)."""
        with self._lock:
            return self._seen.pop(request, None)

    def note_batch(self, answer: RawAnswer | None) -> None:
        self._thread.batch = answer

    def take_batch(self) -> RawAnswer | None:
        """The raw answer to this thread's last legacy batch (None: none came), forgotten."""
        answer: RawAnswer | None = getattr(self._thread, "batch", None)
        self._thread.batch = None
        return answer

    def note_send(self, answer: RawAnswer | None) -> None:
        self._thread.send = answer

    def take_send(self) -> RawAnswer | None:
        """The raw answer to this thread's last send (None: none came), forgotten as taken."""
        answer: RawAnswer | None = getattr(self._thread, "send", None)
        self._thread.send = None
        return answer


class Budgets:
    """Until when each batch may still send. A request past its batch's time is not sent.

    A legacy batch goes out in the caller's thread, whose budget is held there; the SDK's v1
    threads carry nothing of the caller's, so a v1 batch's budget is kept per request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[TopicRequest, float] = {}
        self._thread = threading.local()

    @contextlib.contextmanager
    def v1_batch(self, requests_: Sequence[TopicRequest], until: float | None) -> Iterator[None]:
        """Hold `until` for these v1 requests while the SDK sends them."""
        if until is None:
            yield
            return
        with self._lock:
            for request in requests_:
                self._until[request] = until
        try:
            yield
        finally:
            with self._lock:
                for request in requests_:
                    self._until.pop(request, None)

    @contextlib.contextmanager
    def this_thread(self, until: float | None) -> Iterator[None]:
        """Hold `until` for what this thread sends meanwhile (a legacy batch)."""
        self._thread.until = until
        try:
            yield
        finally:
            self._thread.until = None

    def of(self, request: requests.PreparedRequest) -> float | None:
        """The time by which this request must have gone out, if its batch has one."""
        target = _subscription_target(str(request.method), str(request.url))
        if target is None:
            until: float | None = getattr(self._thread, "until", None)
            return until
        with self._lock:
            return self._until.get(target)


def _is_batch(url: str) -> bool:
    """Whether a URL is the legacy API's batchAdd or batchRemove."""
    return urlsplit(url).path.endswith(("/iid/v1:batchAdd", "/iid/v1:batchRemove"))


class OutOfTime(requests.exceptions.ConnectionError):
    """Not sent: the batch's time was up (its answer is no verdict, and it is retried)."""


class Redirected(requests.exceptions.HTTPError):
    """FCM's host answered a 3xx: never followed (requests would turn a POST into a GET to
    wherever it points, and take that answer for FCM's), and never a verdict."""


def _subscription_target(method: str, url: str) -> TopicRequest | None:
    """The v1 subscribe (POST) or unsubscribe (DELETE) request of a URL, else None."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    try:
        at = segments.index("registrations")
    except ValueError:
        return None
    rest = segments[at + 1 :]
    if method == "POST" and len(rest) == 2 and rest[1] == "topicSubscriptions":
        topics = parse_qs(parts.query).get("topic_name")
        return TopicRequest(True, unquote(rest[0]), topics[-1]) if topics else None
    if method == "DELETE" and len(rest) == 3 and rest[1] == "topicSubscriptions":
        return TopicRequest(False, unquote(rest[0]), unquote(rest[2]))
    return None


class RedirectingAdapter(requests.adapters.HTTPAdapter):
    """Sends the SDK's requests to another base URL, unchanged otherwise, paces every
    topic-management request through the shared pacer, notes what FCM answered beneath the
    SDK (see Evidence), and never follows a redirect."""

    def __init__(
        self, target: str | None, retries: urllib3_retry.Retry, pacer: Pacer | None = None
    ) -> None:
        super().__init__(
            pool_connections=SDK_POOL_SIZE, pool_maxsize=SDK_POOL_SIZE, max_retries=retries
        )
        self.target = target
        self.pacer = pacer
        self.evidence = Evidence()
        self.budgets = Budgets()

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        url = str(request.url)
        if self.target:
            for host in (FCM_HOST, IID_HOST):
                if url.startswith(host + "/"):
                    request.url = self.target + url[len(host) :]
                    break
        cost = request_cost(request)
        until = self.budgets.of(request) if cost else None
        if until is not None and time.monotonic() >= until:
            raise OutOfTime("not sent: the batch's time was up", request=request)
        if self.pacer is not None and cost and self.pacer.try_acquire(cost, until) is None:
            raise OutOfTime("not sent: the pace would pass the batch's time", request=request)
        sent_at = self.pacer.now() if self.pacer is not None else 0.0
        response = super().send(request, *args, **kwargs)
        # The body is read here (as requests would read it next), once, for the pacer's hint
        # and the evidence; a body cut short is noted as such and its error goes on up.
        failure = None
        try:
            body: bytes | None = response.content or b""
        except requests.exceptions.RequestException as error:
            body, failure = None, error
        if self.pacer is not None:
            parsed = _json(body) if response.status_code >= 400 and body is not None else None
            self.pacer.observe(
                response.status_code, wait_hint(response.headers, parsed), cost, sent_at
            )
        self._note(request, response, body, failure)
        if 300 <= response.status_code < 400:
            raise Redirected(
                f"FCM answered HTTP {response.status_code} (redirect to "
                f"{response.headers.get('Location') or 'nowhere'}): not followed",
                request=request,
                response=response,
            )
        return response

    def _note(
        self,
        request: requests.PreparedRequest,
        response: requests.Response,
        body: bytes | None,
        failure: requests.exceptions.RequestException | None,
    ) -> None:
        """Note the raw answer of a topic-subscription request, a legacy batch or a send
        (`body` None: it was cut short, and `failure` goes on up as requests would raise it).
        """
        method, url = str(request.method), str(request.url)
        target = _subscription_target(method, url)
        batch = target is None and _is_batch(url)
        send = target is None and not batch and url.split("?", 1)[0].endswith(":send")
        if target is None and not batch and not send:
            if failure is not None:
                raise failure
            return
        answer = RawAnswer(response.status_code, body, response.headers.get("Location"))
        if target is not None:
            if body is None:
                noted = TokenAnswer(NO_ANSWER, False)
            else:
                noted = read_topic_answer(
                    answer,
                    subscribe=target.subscribe,
                    topic=target.topic,
                    error_code=topic_error_code,
                )
            self.evidence.note(target, noted)
        elif batch:
            self.evidence.note_batch(answer)
        else:
            self.evidence.note_send(answer)
        if failure is not None:
            raise failure  # as requests itself would have, reading the body next


def _json(content: bytes | None) -> object:
    """An answer's body as JSON, or None if it is not JSON."""
    try:
        return json.loads(content or b"{}")
    except ValueError:
        return None


def request_cost(request: requests.PreparedRequest) -> int:
    """How much of FCM's topic quota a request spends: one per token."""
    url = str(request.url).split("?", 1)[0]
    if url.endswith(("/iid/v1:batchAdd", "/iid/v1:batchRemove")):
        body = request.body if isinstance(request.body, str | bytes) else b"{}"
        try:
            return max(1, len(json.loads(body or b"{}").get("registration_tokens", [])))
        except (ValueError, AttributeError):
            return 1
    if "/topicSubscriptions" in url:
        return 1
    return 0  # sending messages is not topic management


MAX_RETRY_AFTER = 24 * 3600.0  # a daily job will not honour a longer hold


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Retry-After in seconds; nonsense (negative, NaN, infinite) is ignored."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def retry_delay(body: object) -> float | None:
    """The `retryDelay` of a google.rpc.RetryInfo detail in a Google error body, in seconds
    (a JSON Duration: "1.5s"); nonsense is ignored."""
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and detail.get("@type") == RETRY_INFO_TYPE:
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                return retry_after({"Retry-After": delay[:-1]})
    return None


def wait_hint(headers: Mapping[str, str] | None, body: object) -> float | None:
    """When FCM said to ask again: a `Retry-After` header or a RetryInfo detail, the later
    if both (FCM may send either, both or neither)."""
    hints = [h for h in (retry_after(headers), retry_delay(body)) if h is not None]
    return max(hints) if hints else None


def http_retries(*, status_retries: int) -> urllib3_retry.Retry:
    """The SDK's own HTTP retry layer, limited to what topic-sync does not do itself.

    A refused connection is retried once here (nothing was sent). A read error is
    never retried here: the request may have reached FCM, and resending a publish
    would send the day's message twice; topic-sync's own policy deals with it (on
    the subscription APIs it comes back as a retryable per-token or batch error).
    5xx answers are left to topic-sync's policy too (status_retries=0), so the two
    layers do not multiply. Every counter is bounded: `other` errors (raised after the
    request was written) and redirects are never retried, and `total` caps the rest, so
    no request (a publish least of all) can be resent an unbounded number of times.
    """
    return urllib3_retry.Retry(
        total=1 + status_retries,
        connect=1,
        read=0,
        redirect=False,
        other=0,
        status=status_retries,
        # A 429 (or 503) with Retry-After is for the pacer and topic-sync's policy to honour.
        respect_retry_after_header=False,
        status_forcelist=[500, 503] if status_retries else [],
        raise_on_status=False,
        backoff_factor=0.5,
        allowed_methods=None,
    )


class DeferredAsyncClient:
    """Stands in for the SDK's asynchronous HTTP client until something uses it.

    The messaging service builds one in its constructor for its `*_async` calls, which
    topic-sync never makes: HTTP/2 support and three TLS contexts, each loading the CA
    bundle, 85 ms of every command's start. The real client is built, with the same
    arguments, on first use; deleting an app whose client was never built closes nothing.
    A service made elsewhere meanwhile gets one too: it behaves as the SDK's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._made: Callable[[], Any] = functools.partial(_SDK_ASYNC_CLIENT, *args, **kwargs)
        self._lock = threading.Lock()
        self.client: Any = None  # the SDK's own client, once built

    def _client(self) -> Any:
        with self._lock:
            if self.client is None:
                self.client = self._made()
            return self.client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client(), name)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


_SDK_ASYNC_CLIENT = _http_client.HttpxAsyncClient
_services_made = threading.Lock()


def messaging_service(app: firebase_admin.App) -> Any:
    """The SDK's per-app messaging service (private API; see the module docstring), its
    asynchronous client deferred (DeferredAsyncClient)."""
    with _services_made:
        _http_client.HttpxAsyncClient = DeferredAsyncClient
        try:
            return messaging._get_messaging_service(app)
        finally:
            _http_client.HttpxAsyncClient = _SDK_ASYNC_CLIENT


def list_topic_subscriptions(
    app: firebase_admin.App, token: str, page_size: int = 2000
) -> Iterator[str]:
    """Yield the topic names FCM holds for one registration (v1 list API, paged).

    firebase-admin 7.7 has no call for this; we use its authorized HTTP client so the
    request carries the same credentials, headers, adapter and pacing as the others.
    Raises requests.exceptions.RequestException (with .response) on errors.
    """
    service = messaging_service(app)
    url = (
        f"{FCM_HOST}/v1/projects/{app.project_id}/registrations/"
        f"{registration_segment(token)}/topicSubscriptions"
    )
    page_token = None
    while True:
        params: dict[str, str | int] = {"pageSize": page_size}
        if page_token:
            params["pageToken"] = page_token
        body = service._client.body(
            "get", url=url, params=params, headers=dict(service._fcm_headers)
        )
        names, page_token = _list_page(body)
        yield from names
        if not page_token:
            return


class UnexpectedAnswer(requests.exceptions.RequestException):
    """A 2xx whose body is not of the documented shape: it proves nothing."""


def _list_page(body: object) -> tuple[list[str], str | None]:
    """The topic names and next page token of a ListTopicSubscriptionsResponse; an answer of
    another shape (a list, an error object, subscriptions without a topic) is no answer."""
    items = body.get("topicSubscriptions", []) if isinstance(body, dict) else None
    page_token = body.get("nextPageToken") if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or "error" in body
        or not isinstance(items, list)
        or not isinstance(page_token, str | None)
    ):
        raise UnexpectedAnswer(f"a topic list of no known shape: {str(body)[:120]!r}")
    names = []
    for item in items:
        name = item.get("topicName") if isinstance(item, dict) else None
        if not name and isinstance(item, dict) and isinstance(item.get("name"), str):
            name = item["name"].rsplit("/topicSubscriptions/", 1)[-1]
        if not isinstance(name, str) or not name:
            raise UnexpectedAnswer(f"a listed subscription names no topic: {str(item)[:120]!r}")
        names.append(name)
    return names, page_token or None


def mint_token(app: firebase_admin.App) -> str | None:
    """Mint an access token with the app's credential, as the SDK does before a request.

    Returns the service account's email when the credential names one. Raises
    google.auth.exceptions.GoogleAuthError (RefreshError, TransportError) when no token
    can be had: a revoked or deleted key, no route to Google's token endpoint.
    """
    from google.auth.transport.requests import Request

    credential = app.credential.get_credential()
    credential.refresh(Request())
    email = getattr(credential, "service_account_email", None)
    return str(email) if email else None


def mounted_adapter(app: firebase_admin.App) -> RedirectingAdapter:
    """The adapter install_adapter put on the app's session (for its target and pacer)."""
    adapter = messaging_service(app)._client.session.get_adapter(FCM_HOST + "/")
    if not isinstance(adapter, RedirectingAdapter):
        raise RuntimeError("the app was not set up by topic_sync.fcm.sdk_bridge.initialize_app")
    return adapter


class DirectAuth:
    """The headers firebase-admin sends with each FCM request, for topic-sync's direct v1 path.

    Built by the SDK's own session from the app's own credential (refreshed when it
    expires): the same names, values and order as the SDK's requests, computed the way the
    SDK computes them rather than copied from one release.
    """

    def __init__(self, app: firebase_admin.App) -> None:
        service = messaging_service(app)
        self._credential = service._credential
        self._session = service._client.session
        self._fcm_headers: dict[str, str] = dict(service._fcm_headers)
        self._lock = threading.Lock()

    def proxy_for(self, url: str) -> str | None:
        """The proxy the SDK's session would go through to reach `url`, by requests' own
        rules (the session's proxies, then HTTPS_PROXY / HTTP_PROXY / ALL_PROXY unless
        NO_PROXY names the host); None to connect directly."""
        settings = self._session.merge_environment_settings(url, {}, None, None, None)
        proxy = requests.utils.select_proxy(url, settings["proxies"])
        return str(proxy) if proxy else None

    def expire(self) -> None:
        """Forget the current token: FCM refused it."""
        with self._lock:
            self._credential.token = None

    def sdk_headers(self, method: str, url: str, body: Any) -> list[tuple[str, str]]:
        """(name, value) of every header but Host that the SDK's session sends for a
        `method` request to `url` with this JSON body (None: no body), in its order."""
        from google.auth.transport.requests import Request

        # As firebase-admin's HttpClient.request, then google-auth's AuthorizedSession.
        headers = {**self._fcm_headers, **_http_client.METRICS_HEADERS}
        with self._lock:
            self._credential.before_request(Request(), method, url, headers)
        prepared = self._session.prepare_request(
            requests.Request(method, url, headers=headers, json=body)
        )
        return [(str(name), str(value)) for name, value in prepared.headers.items()]


def topic_error_code(body: dict[str, Any], status: int) -> str:
    """The SDK's own reading of a topic-subscription error (errorCode, status, HTTP code)."""
    return str(messaging._MessagingService._get_topic_error_code(body, status))


def install_adapter(
    app: firebase_admin.App,
    emulator_host: str | None,
    *,
    status_retries: int = 0,
    pacer: Pacer | None = None,
) -> RedirectingAdapter:
    """Mount our adapter for both FCM hosts on the app's messaging HTTP session."""
    service = messaging_service(app)
    session = service._client.session
    adapter = RedirectingAdapter(
        f"http://{emulator_host}" if emulator_host else None,
        http_retries(status_retries=status_retries),
        pacer,
    )
    for host in (FCM_HOST, IID_HOST):
        session.mount(host, adapter)
    return adapter


def initialize_app(
    *,
    name: str,
    project_id: str | None,
    emulator_host: str | None,
    credentials_file: str | None = None,
    status_retries: int = 0,
    pacer: Pacer | None = None,
) -> firebase_admin.App:
    """A firebase-admin app wired for topic-sync (emulator or real FCM)."""
    options: dict[str, object] = {"projectId": project_id} if project_id else {}
    if emulator_host:
        cred: credentials.Base = EmulatorCredential()
        options.setdefault("projectId", "demo-topic-sync")
    elif credentials_file:
        cred = credentials.Certificate(credentials_file)
    else:
        cred = credentials.ApplicationDefault()
    # Load the key now (no network): a missing, unreadable or malformed credentials file
    # is found before anything runs, not in the middle of a batch.
    cred.get_credential()
    options.setdefault("httpTimeout", HTTP_TIMEOUT_SECONDS)
    app = firebase_admin.initialize_app(cred, options, name=name)
    install_adapter(app, emulator_host, status_retries=status_retries, pacer=pacer)
    return app
