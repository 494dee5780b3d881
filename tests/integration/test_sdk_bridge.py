"""Fails loudly if a firebase-admin upgrade moves what topic-sync relies on.

topic_sync.fcm.sdk_bridge reaches into the SDK's private messaging service to swap the HTTP
adapter under its session. These tests pin every piece of that: if one breaks after an
upgrade, the emulator path (and the production retry policy) would silently stop working.
"""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Iterator

import firebase_admin
import google.auth.credentials
import pytest
import requests
import requests.adapters
from firebase_admin import messaging
from urllib3.util import retry as urllib3_retry

from tests.support import write_service_account_key
from topic_sync.fcm import sdk_bridge
from topic_sync.fcm.pacer import Pacer
from topic_sync.fcm.sdk_bridge import (
    FCM_HOST,
    IID_HOST,
    EmulatorCredential,
    RedirectingAdapter,
    http_retries,
    initialize_app,
    install_adapter,
    messaging_service,
    request_cost,
    retry_after,
)
from topic_sync.fcm.transports import make_client

TARGET = "http://127.0.0.1:9099"
NO_RETRIES = urllib3_retry.Retry(0)


def _app(**options) -> firebase_admin.App:
    return firebase_admin.initialize_app(
        EmulatorCredential(), {"projectId": "demo-test", **options}, name=uuid.uuid4().hex
    )


@pytest.fixture
def bare_app() -> Iterator[firebase_admin.App]:
    """A firebase-admin app with nothing of topic-sync installed yet."""
    app = _app()
    yield app
    firebase_admin.delete_app(app)


# ------------------------------------------------------------------ the SDK's private parts


def test_sdk_still_has_a_per_app_messaging_service(bare_app):
    assert callable(getattr(messaging, "_get_messaging_service", None))
    service = messaging._get_messaging_service(bare_app)
    assert isinstance(service, messaging._MessagingService)
    # Cached per app: the adapter we mount must be on the service later calls use.
    assert messaging._get_messaging_service(bare_app) is service
    assert messaging_service(bare_app) is service


def test_the_sdks_asynchronous_client_is_built_only_when_used():
    # The service builds its httpx client in its constructor, from the module's name: the
    # deferral swaps that name while the service is made, and puts it back.
    from firebase_admin import _http_client

    sdk_client = _http_client.HttpxAsyncClient
    app = initialize_app(name=uuid.uuid4().hex, project_id="demo-test", emulator_host="x:1")
    deferred = messaging_service(app)._async_client
    assert isinstance(deferred, sdk_bridge.DeferredAsyncClient)
    assert deferred.client is None and _http_client.HttpxAsyncClient is sdk_client
    firebase_admin.delete_app(app)  # the service's close() awaits aclose()
    assert deferred.client is None

    app = initialize_app(name=uuid.uuid4().hex, project_id="demo-test", emulator_host="x:1")
    deferred = messaging_service(app)._async_client
    assert deferred.base_url == ""  # first use: the SDK's client, with the service's arguments
    assert isinstance(deferred.client, sdk_client)
    assert deferred.client._timeout == sdk_bridge.HTTP_TIMEOUT_SECONDS
    firebase_admin.delete_app(app)
    assert deferred.client._async_client.is_closed


def test_sdk_urls_start_with_the_hosts_we_rewrite(bare_app):
    assert messaging._MessagingService.FCM_URL.startswith(FCM_HOST + "/")
    assert IID_HOST in (
        messaging._MessagingService.IID_URL,
        messaging._MessagingService.IID_URL.rstrip("/"),
    )
    service = messaging_service(bare_app)
    assert service._fcm_url.startswith(FCM_HOST + "/v1/projects/demo-test/")
    # The v1 topic subscription API lives on the FCM host too.
    assert service._fcm_topic_url == f"{FCM_HOST}/v1/projects/demo-test/registrations"


def test_sdk_service_has_a_requests_session(bare_app):
    service = messaging_service(bare_app)
    assert isinstance(service._client.session, requests.Session)


def test_sdk_topic_calls_go_through_that_session(bare_app, mocker):
    # If the SDK moved topic management to another client (say its httpx one), our
    # adapter would no longer see those requests.
    service = messaging_service(bare_app)
    request = mocker.patch.object(
        service._client.session, "request", side_effect=requests.ConnectionError("x")
    )
    messaging.subscribe_to_topic(["tok-a"], "t", app=bare_app)
    messaging.unsubscribe_from_topic(["tok-a"], "t", app=bare_app)
    urls = sorted(call.args[1].split("?")[0] for call in request.call_args_list)
    assert urls == [
        f"{FCM_HOST}/v1/projects/demo-test/registrations/tok-a/topicSubscriptions",
        f"{FCM_HOST}/v1/projects/demo-test/registrations/tok-a/topicSubscriptions/t",
    ]


# ------------------------------------------------------------------ our wiring


def test_initialize_app_mounts_our_adapter_for_both_hosts(emulator):
    app = initialize_app(
        name=uuid.uuid4().hex, project_id="demo-test", emulator_host=emulator.host_port
    )
    try:
        session = messaging_service(app)._client.session
        fcm = session.get_adapter(f"{FCM_HOST}/v1/projects/demo-test/messages:send")
        iid = session.get_adapter(f"{IID_HOST}/iid/v1:batchAdd")
        assert isinstance(fcm, RedirectingAdapter)
        assert iid is fcm
        assert fcm.target == emulator.base_url
        # It replaced the SDK's own FCM adapter, whose default retries 500/503 four times.
        assert fcm.max_retries.status == 0
        assert not fcm.max_retries.status_forcelist
        # Other hosts (e.g. Google's token endpoint) are not ours to touch.
        other = session.get_adapter("https://oauth2.googleapis.com/token")
        assert not isinstance(other, RedirectingAdapter)
    finally:
        firebase_admin.delete_app(app)


def test_initialize_app_for_the_emulator_defaults_the_project(emulator):
    app = initialize_app(name=uuid.uuid4().hex, project_id=None, emulator_host=emulator.host_port)
    try:
        assert app.project_id == "demo-topic-sync"
        assert isinstance(app.credential, EmulatorCredential)
    finally:
        firebase_admin.delete_app(app)


def test_initialize_app_passes_status_retries_through(emulator):
    app = initialize_app(
        name=uuid.uuid4().hex,
        project_id="demo-test",
        emulator_host=emulator.host_port,
        status_retries=3,
    )
    try:
        adapter = messaging_service(app)._client.session.get_adapter(FCM_HOST + "/x")
        assert adapter.max_retries.status == 3
    finally:
        firebase_admin.delete_app(app)


def test_initialize_app_for_real_fcm_does_not_redirect(tmp_path):
    key_file = write_service_account_key(tmp_path / "sa.json", "real-project")
    app = initialize_app(
        name=uuid.uuid4().hex, project_id=None, emulator_host=None, credentials_file=str(key_file)
    )
    try:
        assert app.project_id == "real-project"
        assert not isinstance(app.credential, EmulatorCredential)
        adapter = messaging_service(app)._client.session.get_adapter(FCM_HOST + "/v1/x")
        assert isinstance(adapter, RedirectingAdapter)  # still ours, for the retry policy
        assert adapter.target is None
        assert adapter.max_retries.status == 0
    finally:
        firebase_admin.delete_app(app)


def test_install_adapter_without_emulator_host(bare_app):
    adapter = install_adapter(bare_app, None)
    assert adapter.target is None
    session = messaging_service(bare_app)._client.session
    assert session.get_adapter(FCM_HOST + "/v1/x") is adapter
    assert session.get_adapter(IID_HOST + "/iid/v1:batchRemove") is adapter


# ------------------------------------------------------------------ the adapter itself


def _prepared(url: str) -> requests.PreparedRequest:
    return requests.Request("POST", url, json={}).prepare()


@pytest.fixture
def base_send(mocker):
    """HTTPAdapter.send replaced: we only look at the request the adapter hands down."""
    response = requests.Response()
    response.status_code = 200
    return mocker.patch.object(
        requests.adapters.HTTPAdapter, "send", autospec=True, return_value=response
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"{FCM_HOST}/v1/projects/p/registrations/a%3Ab/topicSubscriptions?topic_name=t",
            f"{TARGET}/v1/projects/p/registrations/a%3Ab/topicSubscriptions?topic_name=t",
        ),
        (
            f"{FCM_HOST}/v1/projects/p/registrations/a/topicSubscriptions/t?allow_missing=true",
            f"{TARGET}/v1/projects/p/registrations/a/topicSubscriptions/t?allow_missing=true",
        ),
        (f"{FCM_HOST}/v1/projects/p/messages:send", f"{TARGET}/v1/projects/p/messages:send"),
        (f"{IID_HOST}/iid/v1:batchAdd", f"{TARGET}/iid/v1:batchAdd"),
        (f"{IID_HOST}/iid/v1:batchRemove", f"{TARGET}/iid/v1:batchRemove"),
    ],
)
def test_adapter_rewrites_only_the_base_of_fcm_urls(base_send, url, expected):
    adapter = RedirectingAdapter(TARGET, NO_RETRIES)

    response = adapter.send(_prepared(url), timeout=5)

    assert response.status_code == 200
    base_send.assert_called_once()
    sent = base_send.call_args.args[1]
    assert sent.url == expected
    assert sent.method == "POST"
    assert sent.body == b"{}"
    assert base_send.call_args.kwargs["timeout"] == 5


@pytest.mark.parametrize(
    "url",
    [
        "https://oauth2.googleapis.com/token",
        "https://www.googleapis.com/v1/projects/p",
        "https://firebase.googleapis.com/v1/projects/p",
        "http://fcm.googleapis.com/v1/projects/p/messages:send",  # not the https host
        "https://example.com/fcm.googleapis.com/v1",
    ],
)
def test_adapter_leaves_other_hosts_alone(base_send, url):
    RedirectingAdapter(TARGET, NO_RETRIES).send(_prepared(url))
    assert base_send.call_args.args[1].url == url


@pytest.mark.parametrize("target", [None, ""])
@pytest.mark.parametrize(
    "url", [f"{FCM_HOST}/v1/projects/p/messages:send", f"{IID_HOST}/iid/v1:batchAdd"]
)
def test_adapter_without_emulator_host_rewrites_nothing(base_send, target, url):
    RedirectingAdapter(target, NO_RETRIES).send(_prepared(url))
    assert base_send.call_args.args[1].url == url


def test_adapter_pool_fits_the_sdk_fan_out():
    adapter = RedirectingAdapter(None, NO_RETRIES)
    assert adapter._pool_maxsize >= sdk_bridge.SDK_POOL_SIZE >= 100
    assert adapter.max_retries is NO_RETRIES


# ------------------------------------------------------------------ pacing at the HTTP layer


@pytest.mark.parametrize(
    ("url", "body", "cost"),
    [
        (f"{FCM_HOST}/v1/projects/p/registrations/a/topicSubscriptions?topic_name=t", {}, 1),
        (f"{FCM_HOST}/v1/projects/p/registrations/a/topicSubscriptions/t?allow_missing=1", {}, 1),
        (f"{FCM_HOST}/v1/projects/p/registrations/a/topicSubscriptions?pageSize=2000", None, 1),
        (f"{TARGET}/v1/projects/p/registrations/a/topicSubscriptions", {}, 1),  # rewritten
        (f"{IID_HOST}/iid/v1:batchAdd", {"to": "/topics/t", "registration_tokens": ["a"] * 7}, 7),
        (f"{TARGET}/iid/v1:batchRemove", {"registration_tokens": ["a"] * 1000}, 1000),
        (f"{IID_HOST}/iid/v1:batchAdd", {"registration_tokens": []}, 1),
        (f"{FCM_HOST}/v1/projects/p/messages:send", {"message": {"topic": "t"}}, 0),
        ("https://oauth2.googleapis.com/token", {}, 0),
    ],
)
def test_request_cost_is_one_per_token(url, body, cost):
    request = requests.Request("POST", url, json=body).prepare()
    assert request_cost(request) == cost


def test_request_cost_of_an_unreadable_batch_is_one():
    request = requests.Request("POST", f"{IID_HOST}/iid/v1:batchAdd", data=b"not json").prepare()
    assert request_cost(request) == 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"Retry-After": "0"}, 0.0),
        ({}, None),
        (None, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
    ],
)
def test_retry_after_header_parsing(headers, expected):
    assert retry_after(headers) == expected


def test_retry_after_header_is_read_case_insensitively():
    response = requests.Response()
    response.headers["retry-after"] = "12"
    assert retry_after(response.headers) == 12.0


@pytest.mark.parametrize("value", ["inf", "1e400", "nan"])
def test_retry_after_refuses_non_finite_values(value):
    assert retry_after({"Retry-After": value}) is None


def test_adapter_paces_topic_requests_and_reports_answers(base_send, mocker):
    response = base_send.return_value
    response.status_code = 429
    response.headers["Retry-After"] = "3"
    pacer = mocker.Mock(spec=Pacer)
    pacer.now.return_value = 12.5
    adapter = RedirectingAdapter(TARGET, NO_RETRIES, pacer)

    adapter.send(
        requests.Request(
            "POST", f"{IID_HOST}/iid/v1:batchAdd", json={"registration_tokens": ["a", "b"]}
        ).prepare()
    )

    # The answer is told with the time its request went out, by the pacer's own clock.
    assert pacer.mock_calls == [
        mocker.call.try_acquire(2, None),
        mocker.call.now(),
        mocker.call.observe(429, 3.0, 2, 12.5),
    ]
    assert base_send.call_args.args[1].url == f"{TARGET}/iid/v1:batchAdd"


def test_a_request_past_its_batch_time_is_not_sent(base_send):
    import time

    from topic_sync.fcm.sdk_bridge import OutOfTime, TopicRequest

    adapter = RedirectingAdapter(TARGET, NO_RETRIES, Pacer(1000.0))
    url = f"{FCM_HOST}/v1/projects/p/registrations/tok-1/topicSubscriptions?topic_name=t"
    past = time.monotonic() - 1
    with (
        adapter.budgets.v1_batch([TopicRequest(True, "tok-1", "t")], past),
        pytest.raises(OutOfTime),
    ):
        adapter.send(requests.Request("POST", url, json={}).prepare())
    base_send.assert_not_called()
    adapter.send(requests.Request("POST", url, json={}).prepare())  # no budget: sent
    base_send.assert_called_once()


def test_the_pacer_gives_up_rather_than_wait_past_a_time():
    clock = [100.0]
    pacer = Pacer(1.0, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    assert pacer.try_acquire(1, None) == 0.0
    assert pacer.try_acquire(1, 100.5) is None  # the next slot is at 101: too late
    assert pacer.try_acquire(1, 101.0) == pytest.approx(1.0)  # nothing was reserved by the refusal


def test_adapter_does_not_pace_sends_but_still_observes_them(base_send, mocker):
    pacer = mocker.Mock(spec=Pacer)
    pacer.now.return_value = 7.0
    adapter = RedirectingAdapter(TARGET, NO_RETRIES, pacer)

    adapter.send(_prepared(f"{FCM_HOST}/v1/projects/p/messages:send"))

    pacer.acquire.assert_not_called()
    pacer.observe.assert_called_once_with(200, None, 0, 7.0)


def test_initialize_app_wires_the_pacer_under_the_sdk(emulator):
    sleeps: list[float] = []
    pacer = Pacer(None, sleep=sleeps.append)
    app = initialize_app(
        name=uuid.uuid4().hex,
        project_id="demo-test",
        emulator_host=emulator.host_port,
        pacer=pacer,
    )
    try:
        adapter = messaging_service(app)._client.session.get_adapter(FCM_HOST + "/v1/x")
        assert adapter.pacer is pacer
        emulator.inject_request_errors(429, retry_after=5)

        # Each v1 token is its own request: the pacer sees every 429 and its Retry-After,
        # which the SDK's per-token result would otherwise drop.
        result = make_client(app, "v1").subscribe(["tok-a", "tok-b", "tok-c"], "t")

        assert result.reasons == ("RESOURCE_EXHAUSTED",) * 3
        assert pacer.throttled == 3
        assert 4.0 < pacer.hold_remaining() <= 5.0
    finally:
        firebase_admin.delete_app(app)


@pytest.mark.parametrize("transport", ["v1", "v1-direct", "legacy-iid"])
@pytest.mark.parametrize(
    ("retry_after", "retry_delay", "hold"),
    [(None, None, 0.0), (3, None, 3.0), (None, 4.5, 4.5), (2, 4.5, 4.5)],
)
def test_every_transport_tells_the_pacer_what_a_quota_429_says(
    emulator, transport, retry_after, retry_delay, hold
):
    # FCM's 429 may carry a Retry-After header, a RetryInfo detail, both or neither: each
    # transport hands the pacer the later of the two, with every refused request. (The
    # Instance ID API's error is a bare string: only its header can say anything.)
    from topic_sync.fcm.transports import make_client

    pacer = Pacer(None)
    app = initialize_app(
        name=uuid.uuid4().hex, project_id="demo-test", emulator_host=emulator.host_port, pacer=pacer
    )
    try:
        emulator.set_quota(1, window="sliding", retry_after=retry_after, retry_delay=retry_delay)
        client = make_client(app, transport)
        client.subscribe(["tok-a"], "t")  # the one the window lets through
        result = client.subscribe(["tok-b", "tok-c"], "t")
        assert set(result.reasons) == {"RESOURCE_EXHAUSTED"}
        assert pacer.throttled >= 1
        if transport == "legacy-iid":
            hold = float(retry_after or 0)
        assert pacer.hold_remaining() == pytest.approx(hold, abs=0.5)
        assert pacer.acquire() == 0.0  # a 429's hint holds what was refused, not the pace
    finally:
        firebase_admin.delete_app(app)


# ------------------------------------------------------------------ HTTP retry policy


def test_http_retries_without_status_retries():
    retry = http_retries(status_retries=0)
    assert retry.status == 0
    assert not retry.status_forcelist
    for method in ("POST", "DELETE", "GET"):
        for status in (429, 500, 502, 503, 504):
            assert not retry.is_retry(method, status)
            assert not retry.is_retry(method, status, has_retry_after=True)
    assert retry.connect == 1  # a refused connection never reached FCM: safe to retry


@pytest.mark.parametrize("status_retries", [0, 2])
def test_http_retries_are_bounded_on_every_counter(status_retries):
    # urllib3 retries without end a counter left at None when total is None: "other" errors
    # (raised after the request was written) would resend a publish again and again.
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

    retry = http_retries(status_retries=status_retries)
    assert retry.total == 1 + status_retries
    assert retry.other == 0 and retry.read == 0 and retry.redirect == 0
    url = "/v1/projects/p/messages:send"
    # After the request was written: a read error or any other error is never resent.
    for error in (ProtocolError("reset"), RuntimeError("tls alert")):
        with pytest.raises(MaxRetryError):
            retry.increment("POST", url, error=error)
    # A refused connection sent nothing: once more, then never again.
    refused = NewConnectionError(None, "refused")  # type: ignore[arg-type]
    again = retry.increment("POST", url, error=refused)
    with pytest.raises(MaxRetryError):
        again.increment("POST", url, error=refused)


def test_http_retries_with_status_retries():
    retry = http_retries(status_retries=2)
    assert retry.status == 2
    assert retry.is_retry("POST", 500)
    assert retry.is_retry("DELETE", 503)
    assert not retry.is_retry("POST", 400)
    assert not retry.is_retry("POST", 404)


# ------------------------------------------------------------------ emulator credential


def test_emulator_credential_gives_a_valid_bearer_token():
    credential = EmulatorCredential().get_credential()

    assert isinstance(credential, google.auth.credentials.Credentials)
    assert credential.valid
    headers: dict[str, str] = {}
    credential.apply(headers)
    assert headers["authorization"] == "Bearer owner"

    credential.refresh(None)  # nothing to refresh, and no network
    assert credential.valid
    assert credential.token == "owner"


def test_emulator_credential_is_a_firebase_credential():
    assert isinstance(EmulatorCredential(), firebase_admin.credentials.Base)


def test_registration_segment_is_the_sdk_s_quoting_of_any_token():
    """Its shortcut for the token alphabet gives what quote(token, safe="") gives."""
    from urllib.parse import quote

    from topic_sync.fcm.sdk_bridge import registration_segment

    rng = random.Random(17)
    alphabet = string.ascii_letters + string.digits + "_:.-~" + "/?#% +é\u2603"
    tokens = ["a:b", "fX1:APA91b-_.", "~", ":", "", "a%3Ab", "ab\u00e9"]
    tokens += ["".join(rng.choices(alphabet, k=rng.randint(1, 160))) for _ in range(500)]
    tokens += ["".join(rng.choices(alphabet[:66], k=rng.randint(1, 160))) for _ in range(500)]
    for token in tokens:
        assert registration_segment(token) == quote(token, safe=""), token


@pytest.mark.parametrize("token", ["a:b", "a.b", "..a", "-_:.9", "A" * 200, "a/b?c#d%e f"])
def test_registration_segment_is_exactly_one_path_segment(token):
    from urllib.parse import unquote

    from topic_sync.fcm.sdk_bridge import registration_segment

    segment = registration_segment(token)
    assert "/" not in segment and "?" not in segment and "#" not in segment
    assert segment not in (".", "..")
    assert unquote(segment) == token
