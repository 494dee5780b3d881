"""Tests for the local FCM emulator, over real HTTP and through the real firebase-admin SDK."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from topic_sync.emulator import REASON_WIRE, SHAPES, Canned, FcmEmulator, Publish
from topic_sync.fcm.sdk_bridge import has_fcm_details

REASONS = [
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "UNREGISTERED",
    "SENDER_ID_MISMATCH",
    "INTERNAL",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "TOO_MANY_TOPICS",
    "RESOURCE_EXHAUSTED",
    "QUOTA_EXCEEDED",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "UNKNOWN_ERROR",
    "SOMETHING_NEW",
    "ABORTED",
]
PROJECT = "demo-project"
AUTH = {"Authorization": "Bearer fake-token"}


@pytest.fixture(scope="module")
def server() -> Iterator[FcmEmulator]:
    with FcmEmulator(port=0) as emu:
        yield emu


@pytest.fixture
def emu(server: FcmEmulator) -> FcmEmulator:
    server.reset()
    return server


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update(AUTH)
        yield session


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def subs_url(emu: FcmEmulator, token: str, topic: str | None = None) -> str:
    url = f"{emu.base_url}/v1/projects/{PROJECT}/registrations/{_q(token)}/topicSubscriptions"
    return url if topic is None else f"{url}/{_q(topic)}"


def subscribe(
    http: requests.Session, emu: FcmEmulator, token: str, topic: str
) -> requests.Response:
    return http.post(subs_url(emu, token), params={"topic_name": topic}, json={})


def unsubscribe(
    http: requests.Session, emu: FcmEmulator, token: str, topic: str, allow_missing: bool = True
) -> requests.Response:
    params = {"allow_missing": "true"} if allow_missing else {}
    return http.delete(subs_url(emu, token, topic), params=params)


def batch(
    http: requests.Session, emu: FcmEmulator, op: str, topic: str, tokens: list[str]
) -> requests.Response:
    body = {"to": f"/topics/{topic}", "registration_tokens": tokens}
    return http.post(
        f"{emu.base_url}/iid/v1:{op}", json=body, headers={"access_token_auth": "true"}
    )


def send(
    http: requests.Session, emu: FcmEmulator, message: dict[str, Any], validate_only: bool = False
) -> requests.Response:
    body: dict[str, Any] = {"message": message}
    if validate_only:
        body["validate_only"] = True
    return http.post(f"{emu.base_url}/v1/projects/{PROJECT}/messages:send", json=body)


def sdk_reason(resp: requests.Response) -> str:
    """The per-token reason firebase-admin derives from a v1 error response."""
    from firebase_admin.messaging import _MessagingService

    try:
        body = resp.json() or {}
    except ValueError:
        body = {}
    return _MessagingService._get_topic_error_code(body, resp.status_code)


# --------------------------------------------------------------------------- v1 API


def test_subscribe_then_409_and_state(http, emu):
    resp = subscribe(http, emu, "tok-1", "jobreco-0")
    assert resp.status_code == 200
    body = resp.json()
    assert body["name"] == (f"projects/{PROJECT}/registrations/tok-1/topicSubscriptions/jobreco-0")
    assert body["topicName"] == "jobreco-0"
    assert body["createTime"].endswith("Z") and "T" in body["createTime"]

    again = subscribe(http, emu, "tok-1", "jobreco-0")
    assert again.status_code == 409
    assert again.json()["error"]["status"] == "ALREADY_EXISTS"
    assert emu.members("jobreco-0") == {"tok-1"}
    assert emu.topics_of("tok-1") == {"jobreco-0"}


def test_subscribe_accepts_camel_case_topic_name(http, emu):
    resp = http.post(subs_url(emu, "tok-1"), params={"topicName": "t"}, json={})
    assert resp.status_code == 200
    assert emu.members("t") == {"tok-1"}


def test_subscribe_rejects_missing_or_bad_topic(http, emu):
    assert http.post(subs_url(emu, "tok-1"), json={}).status_code == 400
    assert subscribe(http, emu, "tok-1", "bad topic!").status_code == 400
    assert subscribe(http, emu, "tok-1", "x" * 901).status_code == 400
    assert subscribe(http, emu, "tok-1", "a-Z_0.9~%").status_code == 200


def test_token_with_colon_and_url_encoding(http, emu):
    token = "fAbC:APA91b-x_y.z"
    assert subscribe(http, emu, token, "t").status_code == 200
    assert emu.members("t") == {token}
    got = http.get(subs_url(emu, token, "t"))
    assert got.status_code == 200
    assert got.json()["name"].endswith(f"/registrations/{token}/topicSubscriptions/t")


def test_get_subscription(http, emu):
    assert http.get(subs_url(emu, "tok-1", "t")).status_code == 404
    subscribe(http, emu, "tok-1", "t")
    got = http.get(subs_url(emu, "tok-1", "t"))
    assert got.status_code == 200
    assert got.json()["topicName"] == "t"


def test_delete_with_and_without_allow_missing(http, emu):
    missing = unsubscribe(http, emu, "tok-1", "t", allow_missing=False)
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == "NOT_FOUND"
    ok = unsubscribe(http, emu, "tok-1", "t", allow_missing=True)
    assert ok.status_code == 200 and ok.json() == {}

    subscribe(http, emu, "tok-1", "t")
    resp = unsubscribe(http, emu, "tok-1", "t", allow_missing=False)
    assert resp.status_code == 200
    assert emu.members("t") == set()
    assert emu.topics_of("tok-1") == set()


def test_list_paging(http, emu):
    topics = [f"topic-{i}" for i in range(5)]
    for topic in topics:
        assert subscribe(http, emu, "tok-1", topic).status_code == 200

    seen: list[str] = []
    page_token = None
    pages = 0
    while True:
        params: dict[str, Any] = {"pageSize": 2}
        if page_token:
            params["pageToken"] = page_token
        body = http.get(subs_url(emu, "tok-1"), params=params).json()
        pages += 1
        seen += [s["topicName"] for s in body["topicSubscriptions"]]
        for sub in body["topicSubscriptions"]:
            assert sub["name"].endswith(f"/tok-1/topicSubscriptions/{sub['topicName']}")
            assert sub["createTime"]
        page_token = body.get("nextPageToken")
        if not page_token:
            break
    assert pages == 3
    assert seen == topics


def test_list_empty_and_bad_params(http, emu):
    resp = http.get(subs_url(emu, "tok-1"))
    assert resp.status_code == 200 and resp.json() == {}
    assert http.get(subs_url(emu, "tok-1"), params={"pageSize": "x"}).status_code == 400
    assert http.get(subs_url(emu, "tok-1"), params={"pageSize": -1}).status_code == 400
    assert http.get(subs_url(emu, "tok-1"), params={"pageToken": "!!"}).status_code == 400


def test_list_page_size_default_and_cap(http, emu):
    for i in range(2000):
        emu.subscribe_direct("tok-1", f"t{i:04d}")
    default = http.get(subs_url(emu, "tok-1")).json()
    assert len(default["topicSubscriptions"]) == 1000
    assert "nextPageToken" in default
    capped = http.get(subs_url(emu, "tok-1"), params={"pageSize": 5000}).json()
    assert len(capped["topicSubscriptions"]) == 2000
    assert "nextPageToken" not in capped


def test_topic_limit_v1(http, emu):
    for i in range(2000):
        emu.subscribe_direct("tok-1", f"t{i}")
    resp = subscribe(http, emu, "tok-1", "one-too-many")
    assert sdk_reason(resp) == "TOO_MANY_TOPICS"
    assert "one-too-many" not in emu.topics_of("tok-1")
    # Re-subscribing to a topic it already has is still "already exists", not over the limit.
    assert subscribe(http, emu, "tok-1", "t0").status_code == 409


def test_invalid_and_unregistered_tokens_v1(http, emu):
    bad = subscribe(http, emu, "bad token!", "t")
    assert bad.status_code == 400 and sdk_reason(bad) == "INVALID_ARGUMENT"
    assert sdk_reason(subscribe(http, emu, "x" * 4097, "t")) == "INVALID_ARGUMENT"

    subscribe(http, emu, "tok-dead", "t")
    emu.unregister("tok-dead")
    assert emu.members("t") == set()
    for resp in (
        subscribe(http, emu, "tok-dead", "t"),
        unsubscribe(http, emu, "tok-dead", "t"),
        http.get(subs_url(emu, "tok-dead")),
    ):
        # FCM's own code, in its error details: evidence about this token.
        assert resp.status_code == 404 and sdk_reason(resp) == "UNREGISTERED"
        assert has_fcm_details(resp.json())
    assert has_fcm_details(bad.json())


def test_unknown_path_is_404(http, emu):
    resp = http.get(f"{emu.base_url}/v2/nothing")
    assert resp.status_code == 404
    assert not has_fcm_details(resp.json())  # a front end's 404 says nothing about a token
    assert emu.stats[("unknown", 404)] == 1


def test_whole_request_errors_carry_no_fcm_details(http, emu):
    emu.inject_request_errors(404, count=1)
    resp = subscribe(http, emu, "tok-1", "t")
    assert resp.status_code == 404 and sdk_reason(resp) == "NOT_FOUND"
    assert not has_fcm_details(resp.json())
    assert emu.members("t") == set()


def test_an_api_not_enabled_answers_every_request_as_google_does(http, emu):
    post = http.post(f"{emu.base_url}/emulator/faults", json={"api_disabled": True})
    assert post.status_code == 200
    for resp in (http.get(subs_url(emu, "tok-1")), subscribe(http, emu, "tok-1", "t")):
        assert resp.status_code == 403
        error = resp.json()["error"]
        assert error["status"] == "PERMISSION_DENIED"
        assert f"has not been used in project {PROJECT}" in error["message"]
        info = [d for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
        assert info[0]["reason"] == "SERVICE_DISABLED"
        assert info[0]["metadata"]["service"] == "fcm.googleapis.com"
        assert not has_fcm_details(resp.json())  # Google's front end, not FCM, answered
    assert emu.members("t") == set()
    bad = http.post(f"{emu.base_url}/emulator/faults", json={"api_disabled": "yes"})
    assert bad.status_code == 400
    http.post(f"{emu.base_url}/emulator/faults", json={"api_disabled": None})
    assert http.get(subs_url(emu, "tok-1")).status_code == 200
    emu.set_api_disabled()
    emu.clear_faults()  # clearing the faults enables it again
    assert http.get(subs_url(emu, "tok-1")).status_code == 200


# --------------------------------------------------------------------------- legacy API


def test_legacy_batch_add_and_remove(http, emu):
    emu.unregister("tok-dead")
    resp = batch(http, emu, "batchAdd", "t", ["tok-1", "bad token!", "tok-dead", "tok-2"])
    assert resp.status_code == 200
    assert resp.json() == {
        "results": [{}, {"error": "INVALID_ARGUMENT"}, {"error": "NOT_FOUND"}, {}]
    }
    assert emu.members("t") == {"tok-1", "tok-2"}

    again = batch(http, emu, "batchAdd", "t", ["tok-1"])
    assert again.json() == {"results": [{}]}  # re-subscribing succeeds

    removed = batch(http, emu, "batchRemove", "t", ["tok-1", "tok-never"])
    assert removed.json() == {"results": [{}, {}]}  # removing a non-member succeeds
    assert emu.members("t") == {"tok-2"}


def test_legacy_limits_and_validation(http, emu):
    tokens = [f"tok-{i}" for i in range(1001)]
    over = batch(http, emu, "batchAdd", "t", tokens)
    assert over.status_code == 400 and over.json() == {"error": "INVALID_ARGUMENT"}
    assert emu.members("t") == set()
    assert batch(http, emu, "batchAdd", "t", tokens[:1000]).status_code == 200
    assert len(emu.members("t")) == 1000

    url = f"{emu.base_url}/iid/v1:batchAdd"
    for body in (
        {},
        {"to": "/topics/t"},
        {"registration_tokens": ["a"]},
        {"to": "/topics/bad topic", "registration_tokens": ["a"]},
        {"to": "/topics/t", "registration_tokens": []},
        {"to": "/topics/t", "registration_tokens": [1]},
    ):
        resp = http.post(url, json=body)
        assert resp.status_code == 400 and resp.json() == {"error": "INVALID_ARGUMENT"}
    assert http.post(url, data=b"not json").status_code == 400


def test_topic_limit_legacy(http, emu):
    for i in range(2000):
        emu.subscribe_direct("tok-full", f"t{i}")
    resp = batch(http, emu, "batchAdd", "extra", ["tok-full", "tok-ok"])
    assert resp.json() == {"results": [{"error": "TOO_MANY_TOPICS"}, {}]}
    assert batch(http, emu, "batchRemove", "t0", ["tok-full"]).json() == {"results": [{}]}


# --------------------------------------------------------------------------- send


def test_send_records_recipients_at_that_instant(http, emu):
    subscribe(http, emu, "tok-1", "daily")
    subscribe(http, emu, "tok-2", "daily")
    first = send(http, emu, {"topic": "daily", "data": {"k": "v"}})
    assert first.status_code == 200
    unsubscribe(http, emu, "tok-2", "daily")
    second = send(http, emu, {"topic": "daily"})

    p1, p2 = emu.publishes
    assert isinstance(p1, Publish)
    assert first.json()["name"] == f"projects/{PROJECT}/messages/{p1.message_id}"
    assert p1.message_id != p2.message_id
    assert second.json()["name"].endswith(p2.message_id)
    assert p1.topic == "daily" and p1.message == {"topic": "daily", "data": {"k": "v"}}
    assert p1.recipients == frozenset({"tok-1", "tok-2"})
    assert p2.recipients == frozenset({"tok-1"})
    assert p1.at <= p2.at


def test_validate_only_records_no_publish(http, emu):
    subscribe(http, emu, "tok-1", "daily")
    resp = send(http, emu, {"topic": "daily"}, validate_only=True)
    assert resp.status_code == 200 and resp.json()["name"].startswith(f"projects/{PROJECT}/")
    assert emu.publishes == []
    assert [v.topic for v in emu.validations] == ["daily"]


def test_send_validation(http, emu):
    for message in (
        {},
        {"topic": "a", "token": "b"},
        {"topic": "bad topic"},
        {"topic": "a", "data": {"x": "y" * 5000}},
    ):
        resp = send(http, emu, message)
        assert resp.status_code == 400
        assert resp.json()["error"]["status"] == "INVALID_ARGUMENT"
    url = f"{emu.base_url}/v1/projects/{PROJECT}/messages:send"
    assert http.post(url, data=b"{").status_code == 400
    assert emu.publishes == [] and emu.validations == []


def test_send_to_token(http, emu):
    assert send(http, emu, {"token": "tok-1"}).status_code == 200
    assert send(http, emu, {"token": "bad token!"}).status_code == 400
    emu.unregister("tok-9")
    dead = send(http, emu, {"token": "tok-9"})
    assert dead.status_code == 404 and sdk_reason(dead) == "UNREGISTERED"
    assert [(p.topic, p.recipients) for p in emu.publishes] == [(None, frozenset({"tok-1"}))]


@pytest.mark.parametrize(
    "message", [{"condition": "'a' in topics"}, {"topic": "a", "condition": "'a' in topics"}]
)
@pytest.mark.parametrize("validate_only", [False, True])
def test_send_to_condition_is_refused(http, emu, message, validate_only):
    emu.subscribe_direct("tok-1", "a")
    resp = send(http, emu, message, validate_only=validate_only)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == "condition targets are not supported by this emulator"
    assert emu.publishes == [] and emu.validations == []
    assert emu.stats[("send", 400)] == 1


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("reason", REASONS)
def test_reason_round_trips_v1(http, emu, reason):
    emu.inject_token_error("tok-1", reason)
    sub = subscribe(http, emu, "tok-1", "t")
    unsub = unsubscribe(http, emu, "tok-1", "t")
    assert sdk_reason(sub) == reason
    assert sdk_reason(unsub) == reason
    assert sub.status_code == REASON_WIRE.get(reason, (400,))[0]
    assert emu.topics_of("tok-1") == set()


@pytest.mark.parametrize("reason", REASONS)
def test_reason_round_trips_legacy(http, emu, reason):
    emu.inject_token_error("tok-1", reason)
    for op in ("batchAdd", "batchRemove"):
        resp = batch(http, emu, op, "t", ["tok-0", "tok-1", "tok-2"])
        assert resp.status_code == 200
        assert resp.json() == {"results": [{}, {"error": reason}, {}]}


def test_times_n_faults_clear_after_n(http, emu):
    emu.inject_token_error("tok-1", "UNAVAILABLE", times=2)
    assert sdk_reason(subscribe(http, emu, "tok-1", "t")) == "UNAVAILABLE"
    assert batch(http, emu, "batchAdd", "t", ["tok-1"]).json() == {
        "results": [{"error": "UNAVAILABLE"}]
    }
    assert subscribe(http, emu, "tok-1", "t").status_code == 200
    assert unsubscribe(http, emu, "tok-1", "t").status_code == 200


def test_fault_limited_to_one_op(http, emu):
    emu.inject_token_error("tok-1", "INTERNAL", op="unsubscribe")
    assert subscribe(http, emu, "tok-1", "t").status_code == 200
    assert sdk_reason(unsubscribe(http, emu, "tok-1", "t")) == "INTERNAL"
    assert emu.members("t") == {"tok-1"}
    emu.clear_faults()
    assert unsubscribe(http, emu, "tok-1", "t").status_code == 200


def test_fault_arguments_are_checked(emu):
    with pytest.raises(ValueError):
        emu.inject_token_error("tok-1", "")
    with pytest.raises(ValueError):
        emu.inject_token_error("tok-1", "INTERNAL", op="publish")
    with pytest.raises(ValueError):
        emu.inject_token_error("tok-1", "INTERNAL", times=0)
    with pytest.raises(ValueError):
        emu.inject_request_errors(418)


@pytest.mark.parametrize(
    "status,google_status", [(429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (503, "UNAVAILABLE")]
)
def test_request_errors_with_retry_after(http, emu, status, google_status):
    emu.inject_request_errors(status, count=3, retry_after=7)
    v1 = subscribe(http, emu, "tok-1", "t")
    legacy = batch(http, emu, "batchAdd", "t", ["tok-1"])
    sent = send(http, emu, {"topic": "t"})
    for resp in (v1, legacy, sent):
        assert resp.status_code == status
        assert resp.headers["Retry-After"] == "7"
    assert v1.json()["error"]["status"] == google_status
    assert sent.json()["error"]["status"] == google_status
    assert legacy.json() == {"error": google_status}  # the SDK reads IID errors as strings
    assert emu.members("t") == set() and emu.publishes == []
    # Control endpoints are never faulted, and the count is used up.
    assert http.get(f"{emu.base_url}/emulator/state").status_code == 200
    assert subscribe(http, emu, "tok-1", "t").status_code == 200
    assert "Retry-After" not in subscribe(http, emu, "tok-2", "t").headers


def test_request_error_rate_is_seeded(http, emu):
    def run() -> list[int]:
        emu.reset()
        emu.inject_request_errors(503, rate=0.3, seed=42)
        return [subscribe(http, emu, f"tok-{i}", "t").status_code for i in range(60)]

    first, second = run(), run()
    assert first == second
    assert 5 <= first.count(503) <= 35
    assert set(first) == {200, 503}


def test_quota_rejects_beyond_rate(http, emu):
    emu.set_quota(5)
    start = time.monotonic()
    codes = [subscribe(http, emu, f"tok-{i}", "t").status_code for i in range(40)]
    elapsed = time.monotonic() - start
    ok = codes.count(200)
    assert set(codes) <= {200, 429}
    assert 5 <= ok <= 5 + elapsed * 5 + 1
    rejected = next(
        r for r in (subscribe(http, emu, "tok-x", "t") for _ in range(20)) if r.status_code == 429
    )
    assert sdk_reason(rejected) == "RESOURCE_EXHAUSTED"

    emu.set_quota(None)
    assert subscribe(http, emu, "tok-y", "t").status_code == 200


def test_quota_charges_legacy_batches_per_token(http, emu):
    emu.set_quota(10)
    assert batch(http, emu, "batchAdd", "t", [f"a{i}" for i in range(10)]).status_code == 200
    over = batch(http, emu, "batchAdd", "t", [f"b{i}" for i in range(10)])
    assert over.status_code == 429 and over.json() == {"error": "RESOURCE_EXHAUSTED"}
    assert len(emu.members("t")) == 10


class FrozenClock:
    """The quota's clock, moved by hand: a window's second passes without waiting it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import topic_sync.emulator.quota as quota

        self.now = 1000.0
        monkeypatch.setattr(quota.time, "monotonic", lambda: self.now)


def test_a_sliding_window_admits_its_rate_in_any_second_then_frees(http, emu, monkeypatch):
    clock = FrozenClock(monkeypatch)
    emu.set_quota(5, window="sliding")
    codes = [subscribe(http, emu, f"tok-{i}", "t").status_code for i in range(8)]
    assert codes == [200] * 5 + [429] * 3
    clock.now += 0.9  # the five are still in the window
    assert subscribe(http, emu, "tok-a", "t").status_code == 429
    clock.now += 0.1  # ...and now they have left it, all at once
    codes = [subscribe(http, emu, f"tok-b{i}", "t").status_code for i in range(6)]
    assert codes == [200] * 5 + [429]


def test_a_bucket_lets_a_burst_through_then_its_rate(http, emu, monkeypatch):
    clock = FrozenClock(monkeypatch)
    emu.set_quota(4)
    assert [subscribe(http, emu, f"tok-{i}", "t").status_code for i in range(5)] == [200] * 4 + [
        429
    ]
    clock.now += 0.5  # half a second refills two
    codes = [subscribe(http, emu, f"tok-b{i}", "t").status_code for i in range(3)]
    assert codes == [200, 200, 429]


class HeldLatency:
    """The emulator's clock and latency, moved by hand: each request's latency sleep lasts
    until the test releases it, while the clock stands where the test put it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import topic_sync.emulator.api as api
        import topic_sync.emulator.quota as quota
        import topic_sync.emulator.server as server

        self.now = 1000.0
        self.sleeping: list[threading.Event] = []  # one per request in its sleep, in order
        self._lock = threading.Lock()
        fake = types.SimpleNamespace(monotonic=lambda: self.now, time=time.time)
        monkeypatch.setattr(api, "time", fake)
        monkeypatch.setattr(quota, "time", fake)
        monkeypatch.setattr(server, "wait_out", self._sleep)

    async def _sleep(self, _seconds: float) -> None:
        gate = threading.Event()
        with self._lock:
            self.sleeping.append(gate)
        assert await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)

    def arrive(self, send: Any) -> Any:
        """Start `send()` in a thread and return it once its request sleeps in the emulator."""
        pool = concurrent.futures.ThreadPoolExecutor(1)
        before = len(self.sleeping)
        future = pool.submit(send)
        pool.shutdown(wait=False)
        deadline = time.monotonic() + 10
        while len(self.sleeping) == before:
            assert time.monotonic() < deadline and not future.done()
            time.sleep(0.005)
        return future


@pytest.mark.parametrize("window", ["bucket", "sliding"])
def test_the_quota_counts_a_request_when_it_arrives_not_when_it_is_answered(
    emu, monkeypatch, window
):
    """Three requests arrive 0.6 s apart (1.67/s, under a quota of 2/s) and are handled
    together after their latency: counted as they arrived, all three get through; counted
    when handled, the third would be refused (three in one second)."""
    clock = HeldLatency(monkeypatch)
    emu.set_quota(2, window=window)
    emu.set_latency(0.05)
    futures = []
    for i in range(3):
        if i:
            clock.now += 0.6

        def send(token: str = f"tok-{i}") -> int:
            with requests.Session() as session:
                session.headers.update(AUTH)
                return subscribe(session, emu, token, "t").status_code

        futures.append(clock.arrive(send))
    for gate, future in zip(clock.sleeping, futures, strict=True):
        gate.set()
        assert future.result(timeout=10) == 200


@pytest.mark.parametrize(
    ("retry_after", "retry_delay", "header", "detail"),
    [
        (None, None, None, None),
        (1, None, "1", None),
        (None, 0.25, None, "0.25s"),
        (0.4, 1.5, "1", "1.5s"),
    ],
)
def test_a_quota_429_carries_the_hints_it_was_given(
    http, emu, retry_after, retry_delay, header, detail
):
    from topic_sync.fcm.sdk_bridge import wait_hint
    from topic_sync.fcm.wire import RETRY_INFO_TYPE

    emu.set_quota(1, window="sliding", retry_after=retry_after, retry_delay=retry_delay)
    assert subscribe(http, emu, "tok-1", "t").status_code == 200
    refused = subscribe(http, emu, "tok-2", "t")
    assert refused.status_code == 429
    assert refused.headers.get("Retry-After") == header
    error = refused.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    infos = [d for d in error.get("details", []) if d["@type"] == RETRY_INFO_TYPE]
    assert [d["retryDelay"] for d in infos] == ([detail] if detail else [])
    assert sdk_reason(refused) == "RESOURCE_EXHAUSTED"
    expected = [float(h) for h in (header, detail and detail[:-1]) if h is not None]
    assert wait_hint(refused.headers, refused.json()) == (max(expected) if expected else None)


def test_a_legacy_batch_over_the_quota_gets_the_header_in_its_own_format(http, emu):
    emu.set_quota(10, window="sliding", retry_after=2, retry_delay=2)
    assert batch(http, emu, "batchAdd", "t", [f"a{i}" for i in range(10)]).status_code == 200
    over = batch(http, emu, "batchAdd", "t", ["b"])
    assert over.status_code == 429 and over.json() == {"error": "RESOURCE_EXHAUSTED"}
    assert over.headers["Retry-After"] == "2"


@pytest.mark.parametrize(
    "bad",
    [
        {"rate": 0},
        {"rate": 10, "window": "fixed"},
        {"rate": 10, "retry_after": -1},
        {"rate": 10, "retry_delay": float("nan")},
    ],
)
def test_a_quota_with_nonsense_is_refused(emu, bad):
    with pytest.raises(ValueError):
        emu.set_quota(bad.pop("rate"), **bad)


def test_latency(http, emu):
    emu.set_latency(0.05)
    start = time.monotonic()
    subscribe(http, emu, "tok-1", "t")
    assert time.monotonic() - start >= 0.05
    emu.clear_faults()


def test_stats_and_direct_changes(http, emu):
    subscribe(http, emu, "tok-1", "t")
    subscribe(http, emu, "tok-1", "t")
    batch(http, emu, "batchRemove", "t", ["tok-1"])
    assert emu.stats[("subscribe", 200)] == 1
    assert emu.stats[("subscribe", 409)] == 1
    assert emu.stats[("batchRemove", 200)] == 1
    emu.subscribe_direct("tok-2", "t")
    assert emu.members("t") == {"tok-2"}
    emu.unsubscribe_direct("tok-2", "t")
    assert emu.members("t") == set()


# --------------------------------------------------------------------------- FCM's own shapes

# FCM's ErrorCode enum (firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode), with the
# alias APNS_AUTH_ERROR the SDK suites still replay.
FCM_ERROR_CODES = {
    "UNSPECIFIED_ERROR",
    "INVALID_ARGUMENT",
    "UNREGISTERED",
    "SENDER_ID_MISMATCH",
    "QUOTA_EXCEEDED",
    "UNAVAILABLE",
    "INTERNAL",
    "THIRD_PARTY_AUTH_ERROR",
}


def test_the_emulator_carries_only_error_codes_fcm_has():
    for reason, (_status, _google, fcm_code) in REASON_WIRE.items():
        assert fcm_code is None or fcm_code in FCM_ERROR_CODES, reason
    # A per-token NOT_FOUND is the Python suite's bare 404: Google's error, no FcmError.
    assert REASON_WIRE["NOT_FOUND"] == (404, "NOT_FOUND", None)
    # Each FcmError code on the HTTP status FCM's reference gives it.
    documented = {
        "INVALID_ARGUMENT": 400,
        "UNREGISTERED": 404,
        "SENDER_ID_MISMATCH": 403,
        "QUOTA_EXCEEDED": 429,
        "UNAVAILABLE": 503,
        "INTERNAL": 500,
        "THIRD_PARTY_AUTH_ERROR": 401,
    }
    for reason, (status, _google, fcm_code) in REASON_WIRE.items():
        if fcm_code in documented:
            assert status == documented[fcm_code], reason


def test_a_dead_token_is_answered_as_the_sdk_suites_replay_it(http, emu):
    emu.unregister("tok-dead")
    resp = unsubscribe(http, emu, "tok-dead", "t")
    error = resp.json()["error"]
    assert resp.status_code == 404 and error["status"] == "NOT_FOUND"
    assert error["details"] == [
        {
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": "UNREGISTERED",
        }
    ]


# --------------------------------------------------------------------------- strange answers


def _request(http, emu, kind: str, token: str = "tok-1", tokens: int = 3) -> requests.Response:
    """One request of `kind`, redirects not followed (a client must not follow them)."""
    if kind == "subscribe":
        return http.post(
            subs_url(emu, token), params={"topic_name": "t"}, json={}, allow_redirects=False
        )
    if kind == "unsubscribe":
        return http.delete(
            subs_url(emu, token, "t"), params={"allow_missing": "true"}, allow_redirects=False
        )
    if kind in ("batchAdd", "batchRemove"):
        body = {"to": "/topics/t", "registration_tokens": [f"{token}-{i}" for i in range(tokens)]}
        return http.post(f"{emu.base_url}/iid/v1:{kind}", json=body, allow_redirects=False)
    return http.post(
        f"{emu.base_url}/v1/projects/{PROJECT}/messages:send",
        json={"message": {"topic": "t"}},
        allow_redirects=False,
    )


ALL_KINDS = ["subscribe", "unsubscribe", "batchAdd", "batchRemove", "send"]


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize(
    ("shape", "status", "content_type", "body"),
    [
        ("html", 200, "text/html", b"<!DOCTYPE html>"),
        ("empty", 200, "application/json", b""),
        ("text", 200, "text/plain", b"OK"),
        ("json-error", 200, "application/json", b'{"error":{"code":404'),
        ("json-list", 200, "application/json", b"[]"),
        ("json-null", 200, "application/json", b"null"),
        ("string-error", 200, "application/json", b'{"error":"NotRegistered"}'),
    ],
)
def test_the_fault_menu_answers_any_request_strangely(
    http, emu, kind, shape, status, content_type, body
):
    emu.inject_answer(shape, kinds=[kind])
    resp = _request(http, emu, kind)
    assert resp.status_code == status
    assert resp.headers["Content-Type"].startswith(content_type)
    assert resp.content.startswith(body)
    assert emu.members("t") == set() and emu.publishes == []  # not served
    assert emu.stats[(kind, status)] == 1


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_redirect_points_at_a_landing_that_counts_who_followed_it(http, emu, kind):
    emu.inject_answer("redirect", kinds=[kind])
    resp = _request(http, emu, kind)
    assert resp.status_code == 302 and resp.headers["Location"] == "/landing"
    assert emu.stats[(kind, 302)] == 1
    followed = http.get(f"{emu.base_url}{resp.headers['Location']}")
    assert followed.status_code == 200 and followed.json() == {}
    assert emu.stats[("landing", 200)] == 1


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_cut_answer_promises_more_than_it_sends(http, emu, kind):
    emu.inject_answer("cut", kinds=[kind], count=1)
    with pytest.raises(requests.exceptions.RequestException):
        _request(http, emu, kind)
    assert _request(http, emu, kind).status_code == 200  # used up; the next is whole


@pytest.mark.parametrize(
    ("shape", "results"),
    [
        ("short-results", 2),
        ("empty-results", 0),
        ("long-results", 4),
        ("non-object-results", 3),
    ],
)
def test_legacy_results_of_the_wrong_length_or_kind(http, emu, shape, results):
    emu.inject_answer(shape, kinds=["batchAdd"])
    body = _request(http, emu, "batchAdd", tokens=3).json()
    assert len(body["results"]) == results
    if shape == "non-object-results":
        assert not any(isinstance(r, dict) for r in body["results"])


def test_legacy_answers_without_a_results_list(http, emu):
    emu.inject_answer("no-results", kinds=["batchRemove"], count=1)
    emu.inject_answer("results-not-list", kinds=["batchAdd"], count=1)
    assert _request(http, emu, "batchRemove").json() == {}
    assert _request(http, emu, "batchAdd").json() == {"results": {}}


def test_send_answers_that_name_no_message(http, emu):
    emu.inject_answer("no-name", kinds=["send"], count=1)
    emu.inject_answer("null-name", kinds=["send"], count=1)
    assert _request(http, emu, "send").json() == {"name": None}  # the newest first
    assert _request(http, emu, "send").json() == {}
    assert emu.publishes == []


def test_strange_answers_target_tokens_count_and_may_follow_the_work(http, emu):
    emu.inject_answer("html", kinds=["subscribe"], tokens=["tok-2"], count=1, served=True)
    emu.inject_answer("empty", status=204, kinds=["unsubscribe"], tokens=["tok-1"])
    assert _request(http, emu, "subscribe", "tok-1").status_code == 200  # not targeted
    odd = _request(http, emu, "subscribe", "tok-2")
    assert odd.status_code == 200 and odd.content.startswith(b"<!DOCTYPE")
    assert emu.members("t") == {"tok-1", "tok-2"}  # served first: FCM did the work
    assert subscribe(http, emu, "tok-2", "t").status_code == 409  # count used up
    for _ in range(2):  # until cleared
        assert _request(http, emu, "unsubscribe", "tok-1").status_code == 204
    assert emu.members("t") == {"tok-1", "tok-2"}  # not served
    emu.clear_faults()
    assert _request(http, emu, "unsubscribe", "tok-1").status_code == 200
    assert emu.members("t") == {"tok-2"}


def test_a_canned_answer_goes_out_byte_for_byte(http, emu):
    body = b'{"error": {"status": "NOT_FOUND", "message": "Not found"}}'
    emu.inject_answer(Canned(404, body, None), kinds=["unsubscribe"])
    resp = _request(http, emu, "unsubscribe")
    assert resp.status_code == 404 and resp.content == body
    assert "Content-Type" not in resp.headers  # as the Python suite's mock adapter answers


def test_whole_request_errors_come_before_strange_answers(http, emu):
    emu.inject_answer("html", kinds=["subscribe"])
    emu.inject_request_errors(503, count=1)
    assert _request(http, emu, "subscribe").status_code == 503
    assert _request(http, emu, "subscribe").content.startswith(b"<!DOCTYPE")


def test_strange_answer_arguments_are_checked(emu):
    with pytest.raises(ValueError, match="shape must be one of"):
        emu.inject_answer("nonsense")
    with pytest.raises(ValueError, match="answers only"):
        emu.inject_answer("short-results", kinds=["subscribe"])
    with pytest.raises(ValueError, match="answers only"):
        emu.inject_answer("no-name")  # every kind, but only sends can be answered so
    with pytest.raises(ValueError, match="kinds must be among"):
        emu.inject_answer("html", kinds=["publish"])
    with pytest.raises(ValueError, match="count"):
        emu.inject_answer("html", count=0)
    with pytest.raises(ValueError, match="status"):
        emu.inject_answer("html", status=42)
    with pytest.raises(ValueError, match="status goes with a named shape"):
        emu.inject_answer(Canned(200, b"{}"), status=404)
    with pytest.raises(ValueError, match="cut"):
        Canned(200, b"{}", cut=2)
    assert set(SHAPES) >= {"html", "empty", "text", "redirect", "cut", "short-results"}


def test_strange_answers_over_the_control_api(http, emu):
    base = f"{emu.base_url}/emulator"
    spec = {
        "answers": [  # in order: the newest a request meets wins
            {"canned": {"status": 200, "body": "<p>hi</p>", "content_type": "text/html"}},
            {"canned": {"status": 200, "body_base64": "e30=", "cut": 1}, "kinds": ["send"]},
            {"shape": "long-results", "kinds": ["batchAdd"], "count": 1},
        ]
    }
    assert http.post(f"{base}/faults", json=spec).status_code == 200
    assert len(_request(http, emu, "batchAdd", tokens=2).json()["results"]) == 3
    assert _request(http, emu, "subscribe").content == b"<p>hi</p>"
    with pytest.raises(requests.exceptions.RequestException):
        _request(http, emu, "send")  # "{}" promised, "{" sent
    assert http.post(f"{base}/faults", json={"answers": None}).status_code == 200
    assert _request(http, emu, "subscribe").status_code == 200
    bad = http.post(f"{base}/faults", json={"answers": [{"shape": "nonsense"}]})
    assert bad.status_code == 400 and "shape must be one of" in bad.json()["error"]
    bad = http.post(
        f"{base}/faults", json={"answers": [{"canned": {"status": 200, "body_base64": "!"}}]}
    )
    assert bad.status_code == 400


# --------------------------------------------------------------------------- control API


def test_control_api_round_trip(http, emu):
    base = f"{emu.base_url}/emulator"
    faults = {
        "token_errors": [
            {"token": "tok-1", "reason": "SENDER_ID_MISMATCH", "op": "subscribe", "times": 1}
        ],
        "request_errors": {"status": 503, "count": 1, "retry_after": 0, "seed": 1},
        "quota": 1000,
        "latency": 0,
        "unregister": ["tok-dead"],
    }
    assert http.post(f"{base}/faults", json=faults).status_code == 200
    assert subscribe(http, emu, "tok-2", "t").status_code == 503
    assert sdk_reason(subscribe(http, emu, "tok-1", "t")) == "SENDER_ID_MISMATCH"
    assert subscribe(http, emu, "tok-1", "t").status_code == 200
    assert subscribe(http, emu, "tok-2", "t").status_code == 200
    assert sdk_reason(subscribe(http, emu, "tok-dead", "t")) == "UNREGISTERED"
    assert (
        http.post(
            f"{base}/direct", json={"subscribe": [{"token": "tok-0", "topic": "t"}]}
        ).status_code
        == 200
    )
    send(http, emu, {"topic": "t"})
    send(http, emu, {"topic": "t"}, validate_only=True)

    assert http.get(f"{base}/topics/t").json() == ["tok-0", "tok-1", "tok-2"]
    assert http.get(f"{base}/topics/none").json() == []
    state = http.get(f"{base}/state").json()
    assert state["topics"] == {"t": ["tok-0", "tok-1", "tok-2"]}
    assert state["validations"] == 1
    (pub,) = state["publishes"]
    assert pub["topic"] == "t" and pub["recipients"] == ["tok-0", "tok-1", "tok-2"]
    assert pub["message"] == {"topic": "t"} and pub["message_id"] and pub["at"] > 0
    assert state["stats"]["subscribe"] == {"200": 2, "403": 1, "404": 1, "503": 1}
    assert state["stats"]["send"] == {"200": 2}

    http.post(f"{base}/faults", json={"request_errors": {"status": 429}})
    assert subscribe(http, emu, "tok-3", "t").status_code == 429
    assert http.post(f"{base}/clear-faults").status_code == 200
    assert subscribe(http, emu, "tok-3", "t").status_code == 200
    assert http.post(f"{base}/reset").status_code == 200
    assert http.get(f"{base}/state").json() == {
        "topics": {},
        "publishes": [],
        "validations": 0,
        "unregistered": [],
        "stats": {},
    }

    bad = http.post(f"{base}/faults", json={"token_errors": [{"token": "x", "reason": ""}]})
    assert bad.status_code == 400
    assert http.post(f"{base}/faults", data=b"{").status_code == 400
    assert http.get(f"{base}/nothing").status_code == 404


def test_control_api_sets_a_quota_and_its_shape(http, emu):
    base = f"{emu.base_url}/emulator"
    shape = {"rate": 1, "window": "sliding", "retry_after": 1, "retry_delay": 0.5}
    assert http.post(f"{base}/faults", json={"quota": shape}).status_code == 200
    assert subscribe(http, emu, "tok-1", "t").status_code == 200
    refused = subscribe(http, emu, "tok-2", "t")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["details"][0]["retryDelay"] == "0.5s"
    bad = http.post(f"{base}/faults", json={"quota": {"rate": 5, "window": "fixed"}})
    assert bad.status_code == 400 and "window" in bad.json()["error"]
    assert http.post(f"{base}/faults", json={"quota": None}).status_code == 200
    assert subscribe(http, emu, "tok-2", "t").status_code == 200


# --------------------------------------------------------------------------- real SDK


@pytest.fixture
def sdk_app(server: FcmEmulator, emu: FcmEmulator, monkeypatch) -> Iterator[Any]:
    """A firebase-admin app whose FCM and IID URLs point at the emulator."""
    import firebase_admin
    from firebase_admin import credentials, messaging
    from google.auth.credentials import AnonymousCredentials

    class _Anonymous(credentials.Base):
        def get_credential(self):
            return AnonymousCredentials()

    app = firebase_admin.initialize_app(
        _Anonymous(), options={"projectId": PROJECT}, name=f"emu-{time.monotonic_ns()}"
    )
    service = messaging._get_messaging_service(app)
    monkeypatch.setattr(service, "_fcm_url", f"{emu.base_url}/v1/projects/{PROJECT}/messages:send")
    monkeypatch.setattr(
        service, "_fcm_topic_url", f"{emu.base_url}/v1/projects/{PROJECT}/registrations"
    )
    monkeypatch.setattr(messaging._MessagingService, "IID_URL", emu.base_url)
    yield app
    firebase_admin.delete_app(app)


@pytest.mark.filterwarnings("ignore:.*_legacy is deprecated:DeprecationWarning")
def test_real_sdk_v1_and_legacy(sdk_app, emu):
    from firebase_admin import messaging

    tokens = [f"tok-{i}" for i in range(150)] + ["bad token!", "tok-dead", "tok-fail"]
    emu.unregister("tok-dead")
    emu.inject_token_error("tok-fail", "QUOTA_EXCEEDED", op="subscribe")
    emu.inject_token_error("tok-7", "INTERNAL", times=1)  # absorbed by the SDK's own retry
    emu.subscribe_direct("tok-0", "daily")  # 409 counts as success

    resp = messaging.subscribe_to_topic(tokens, "/topics/daily", app=sdk_app)
    assert resp.success_count == 150
    assert {(tokens[e.index], e.reason) for e in resp.errors} == {
        ("bad token!", "INVALID_ARGUMENT"),
        ("tok-dead", "UNREGISTERED"),
        ("tok-fail", "QUOTA_EXCEEDED"),
    }
    assert emu.members("daily") == set(tokens[:150])

    name = messaging.send(messaging.Message(topic="daily", data={"k": "v"}), app=sdk_app)
    assert name.endswith(emu.publishes[0].message_id)
    assert emu.publishes[0].recipients == frozenset(tokens[:150])
    messaging.send(messaging.Message(topic="daily"), dry_run=True, app=sdk_app)
    assert len(emu.publishes) == 1 and len(emu.validations) == 1

    emu.inject_token_error("tok-1", "UNKNOWN_ERROR", op="unsubscribe")
    out = messaging.unsubscribe_from_topic(tokens[:10], "daily", app=sdk_app)
    assert [(e.index, e.reason) for e in out.errors] == [(1, "UNKNOWN_ERROR")]
    assert emu.members("daily") == set(tokens[10:150]) | {"tok-1"}

    legacy = messaging.unsubscribe_from_topic_legacy(tokens[10:150], "daily", app=sdk_app)
    assert legacy.success_count == 140
    emu.inject_token_error("tok-2", "TOO_MANY_TOPICS")
    added = messaging.subscribe_to_topic_legacy(["tok-1", "tok-2"], "daily", app=sdk_app)
    assert [(e.index, e.reason) for e in added.errors] == [(1, "TOO_MANY_TOPICS")]
    assert emu.members("daily") == {"tok-1"}


@pytest.mark.filterwarnings("ignore:.*_legacy is deprecated:DeprecationWarning")
def test_real_sdk_request_errors(sdk_app, emu):
    from firebase_admin import exceptions, messaging

    emu.inject_request_errors(503, count=1, retry_after=0)  # the SDK retries 503 itself
    assert messaging.subscribe_to_topic(["tok-1"], "t", app=sdk_app).success_count == 1
    emu.inject_request_errors(429, count=1)
    resp = messaging.subscribe_to_topic(["tok-2"], "t", app=sdk_app)
    assert [e.reason for e in resp.errors] == ["RESOURCE_EXHAUSTED"]
    emu.inject_request_errors(429, count=1)
    with pytest.raises(exceptions.ResourceExhaustedError):
        messaging.subscribe_to_topic_legacy(["tok-2"], "t", app=sdk_app)


# --------------------------------------------------------------------------- HTTP


def _exchange(emu: FcmEmulator, raw: bytes) -> tuple[bytes, bool]:
    """Send raw bytes on a fresh connection: everything answered, and whether the emulator
    then closed the connection (rather than keep it open for the next request)."""
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as conn:
        conn.sendall(raw)
        conn.settimeout(0.5)  # an open connection stays silent: no more is coming
        answer, closed = b"", False
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            answer += chunk
        return answer, closed


def _post(
    emu: FcmEmulator, token: str, *fields: str, body: bytes = b"{}", version: str = "1.1"
) -> bytes:
    path = f"/v1/projects/{PROJECT}/registrations/{token}/topicSubscriptions?topic_name=t"
    head = "".join(f"{f}\r\n" for f in fields)
    return f"POST {path} HTTP/{version}\r\nHost: x\r\n{head}\r\n".encode() + body


def test_header_fields_are_read_whatever_their_case(emu):
    answer, closed = _exchange(
        emu, _post(emu, "tok-a", "CONTENT-length: 2", "authorization: Bearer x")
    )
    assert answer.startswith(b"HTTP/1.1 200 ") and not closed
    assert emu.members("t") == {"tok-a"}


def test_a_chunked_body_and_an_expect_100_are_honoured(emu):
    chunked = _post(emu, "tok-b", "Transfer-Encoding: Chunked", body=b"2\r\n{}\r\n0\r\n\r\n")
    answer, _ = _exchange(emu, chunked)
    assert answer.startswith(b"HTTP/1.1 200 ")
    expect = _post(emu, "tok-c", "Content-Length: 2", "Expect: 100-continue")
    answer, _ = _exchange(emu, expect)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    assert emu.members("t") == {"tok-b", "tok-c"}


def test_a_connection_stays_open_unless_the_client_says_close(emu):
    assert _exchange(emu, _post(emu, "tok-d", "Content-Length: 2"))[1] is False
    assert _exchange(emu, _post(emu, "tok-e", "Content-Length: 2", "Connection: close"))[1]
    assert _exchange(emu, _post(emu, "tok-f", "Content-Length: 2", version="1.0"))[1]
    kept = _post(emu, "tok-g", "Content-Length: 2", "Connection: Keep-Alive", version="1.0")
    assert _exchange(emu, kept)[1] is False
    assert emu.members("t") == {"tok-d", "tok-e", "tok-f", "tok-g"}


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"POST /x\r\n\r\n", b"400", id="no-version"),
        pytest.param(b"POST /x HTTP/2.0\r\n\r\n", b"400", id="http-2"),
        pytest.param(b"POST /x HTTP/1.1 extra\r\n\r\n", b"400", id="four-words"),
        pytest.param(
            b"GET /x HTTP/1.1\r\n" + b"X: 1\r\n" * 101 + b"\r\n", b"431", id="too-many-fields"
        ),
        pytest.param(
            b"GET /x HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", b"431", id="long-field"
        ),
    ],
)
def test_a_malformed_request_is_refused_and_its_connection_closed(emu, raw, status):
    answer, closed = _exchange(emu, raw)
    assert b"Error code: " + status in answer and closed
    assert not emu.stats  # never answered as a request


def test_requests_wait_out_their_latency_on_the_loop_not_in_a_thread_each(emu, monkeypatch):
    """Fifty connections, each with a request in its latency: no thread was started for any
    of them, and every one is answered once its latency ends."""
    import topic_sync.emulator.server as server

    waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def held(_seconds: float) -> None:
        gate = asyncio.Event()
        waiting.append((asyncio.get_running_loop(), gate))
        await gate.wait()

    monkeypatch.setattr(server, "wait_out", held)
    emu.set_latency(0.05)
    threads = threading.active_count()
    conns = [socket.create_connection(("127.0.0.1", emu.port), timeout=5) for _ in range(50)]
    try:
        for i, conn in enumerate(conns):
            conn.sendall(_post(emu, f"tok-{i}", "Content-Length: 2"))
        deadline = time.monotonic() + 10
        while len(waiting) < len(conns):
            assert time.monotonic() < deadline, f"{len(waiting)} of {len(conns)} arrived"
            time.sleep(0.005)
        assert threading.active_count() == threads
        for loop, gate in waiting:
            loop.call_soon_threadsafe(gate.set)
        for conn in conns:
            assert conn.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for conn in conns:
            conn.close()
    assert emu.members("t") == {f"tok-{i}" for i in range(50)}


@pytest.mark.parametrize("after", [False, True])
def test_a_trap_s_action_may_call_back_into_the_emulator_while_it_serves(emu, http, after):
    """The action runs off the event loop: its own request to the emulator is answered
    (before the trapped request took effect, or after)."""
    seen: list[Any] = []

    def action() -> None:
        state = requests.get(f"{emu.base_url}/emulator/state", timeout=5).json()
        seen.append(state["topics"])

    emu.add_trap("subscribe", 1, action, after=after)
    status = subscribe(http, emu, "tok-1", "t").status_code
    assert (status, seen) == ((200, [{"t": ["tok-1"]}]) if after else (503, [{}]))
    assert emu.members("t") == ({"tok-1"} if after else set())


def test_stop_drops_a_connection_waiting_out_its_latency(monkeypatch):
    """A client whose request is still in its latency sees its connection end at stop."""
    import topic_sync.emulator.server as server

    arrived = threading.Event()

    async def waiting(seconds: float) -> None:
        arrived.set()
        await asyncio.sleep(seconds)

    monkeypatch.setattr(server, "wait_out", waiting)
    emulator = FcmEmulator().start()
    emulator.set_latency(30)
    conn = socket.create_connection(("127.0.0.1", emulator.port), timeout=5)
    try:
        conn.sendall(_post(emulator, "tok-a", "Content-Length: 2"))
        assert arrived.wait(10)
        emulator.stop()
        assert conn.recv(65536) == b""  # at once: the socket's timeout is 5 s, the latency 30
    finally:
        conn.close()
        emulator.stop()
    assert not emulator.stats  # never answered


def test_a_path_beginning_with_two_slashes_is_read_as_one_slash(emu):
    body = json.dumps({"to": "/topics/t", "registration_tokens": ["tok-h"]}).encode()
    raw = (
        b"POST //iid/v1:batchAdd HTTP/1.1\r\nHost: x\r\naccess_token_auth: true\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answer, _ = _exchange(emu, raw)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert emu.members("t") == {"tok-h"}


# --------------------------------------------------------------------------- lifecycle


def test_a_stop_closes_every_socket_it_accepted():
    # Connections a client closes before the emulator served them, and idle ones, at a stop
    # (a pool let go just before a test's emulator stops): asyncio's own server left the
    # first kind's sockets open for the garbage collector, whose ResourceWarning then
    # failed whichever test was running.
    import gc
    import warnings

    leaked: list[str] = []
    for _ in range(30):
        emulator = FcmEmulator().start()
        clients = [socket.create_connection(("127.0.0.1", emulator.port)) for _ in range(8)]
        for client in clients[:4]:
            client.close()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            emulator.stop()
            for client in clients[4:]:
                client.close()
            gc.collect()
        leaked += [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert not leaked, leaked[:3]


def test_start_stop_and_addresses():
    emu = FcmEmulator()
    emu.start()
    try:
        assert emu.port > 0
        assert emu.host_port == f"127.0.0.1:{emu.port}"
        assert emu.base_url == f"http://127.0.0.1:{emu.port}"
        with requests.Session() as session:
            assert session.get(f"{emu.base_url}/emulator/health").json() == {"ok": True}
    finally:
        emu.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{emu.base_url}/emulator/health", timeout=2)


def test_serve_runs_until_sigterm():
    code = (
        "from topic_sync.emulator import serve\n"
        "serve(port=0, ready=lambda e: print(e.port, flush=True))\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True
    ) as proc:
        _serve_until_sigterm(proc)


def _serve_until_sigterm(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        resp = requests.post(
            f"http://127.0.0.1:{port}/iid/v1:batchAdd",
            json={"to": "/topics/t", "registration_tokens": ["a"]},
            timeout=5,
        )
        assert resp.json() == {"results": [{}]}
        state = requests.get(f"http://127.0.0.1:{port}/emulator/state", timeout=5).json()
        assert json.dumps(state["topics"]) == '{"t": ["a"]}'
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host, loopback):
    from topic_sync.emulator import is_loopback

    assert is_loopback(host) is loopback


def test_the_cli_warns_when_the_emulator_listens_beyond_this_machine():
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "topic_sync.cli", "emulator", "--host", "0.0.0.0"]
    with subprocess.Popen(
        [*command, "--port", "0"], stderr=subprocess.PIPE, env=env, text=True
    ) as proc:
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()
            assert first.startswith("WARNING: binding the emulator to 0.0.0.0")
            assert "FCM emulator listening on" in proc.stderr.readline()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
