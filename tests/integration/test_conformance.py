"""The conformance corpus (sdk_fixtures.py) replayed byte for byte through every transport.

Each answer shape the official Admin SDK suites use for topic management and send is given
by the emulator exactly as the suite gives it (a canned answer of its fault menu), to each
transport and operation it applies to, through the real firebase-admin code path; the test
checks the verdict topic-sync reaches (the engine's own judgement of each token's answer).
"""

from __future__ import annotations

import firebase_admin
import pytest
from firebase_admin import messaging

from tests.integration.sdk_fixtures import IID_SHAPES, SEND_SHAPES, V1_SHAPES, SendShape, TopicShape
from topic_sync.emulator import Canned, FcmEmulator
from topic_sync.engine.drain import judge
from topic_sync.errors import CredentialsError
from topic_sync.fcm.client import BatchResult, PublishError
from topic_sync.fcm.transports import make_client
from topic_sync.states import Op, SubscriptionStatus

TOPIC = "conformance"
TRANSPORTS = {"v1": ("v1", "v1-direct"), "iid": ("legacy-iid",)}
KIND = {
    ("v1", "subscribe"): "subscribe",
    ("v1", "unsubscribe"): "unsubscribe",
    ("iid", "subscribe"): "batchAdd",
    ("iid", "unsubscribe"): "batchRemove",
}


@pytest.fixture
def emulator(module_emulator: FcmEmulator) -> FcmEmulator:
    module_emulator.reset()
    return module_emulator


@pytest.fixture
def app(module_app: firebase_admin.App, emulator: FcmEmulator) -> firebase_admin.App:
    return module_app


def _cases() -> list[pytest.param]:
    cases = []
    for shape in (*V1_SHAPES, *IID_SHAPES):
        for transport in TRANSPORTS[shape.api]:
            for op in shape.verdicts:
                cases.append(
                    pytest.param(
                        shape, transport, op, id=f"{shape.id}-{shape.status}-{transport}-{op}"
                    )
                )
    return cases


def verdict(result: BatchResult, index: int, op: Op, *, endpoint_proven: bool) -> str:
    """The corpus's word for what the engine makes of token `index`'s answer."""
    outcome = judge(index, result, index, op, endpoint_proven=endpoint_proven)
    if outcome is None:
        return "stop"
    if outcome.invalid:
        assert outcome.status is (
            SubscriptionStatus.UNSUBSCRIBED
            if op is Op.SUBSCRIBE
            else SubscriptionStatus.UNSUBSCRIBED
        )
        return "dead"
    if outcome.status is SubscriptionStatus.confirmed_for(op) and outcome.code is None:
        return "confirmed"
    if outcome.status is SubscriptionStatus.pending_for(op):
        return f"retried:{outcome.code}"
    assert (
        op is Op.SUBSCRIBE and outcome.status is SubscriptionStatus.UNSUBSCRIBED and outcome.failed
    )
    return f"refused:{outcome.code}"


@pytest.mark.parametrize(("shape", "transport", "op_name"), _cases())
def test_topic_answer_shapes_of_the_sdk_suites(
    app, emulator, shape: TopicShape, transport: str, op_name: str
) -> None:
    client = make_client(app, transport)
    op = Op(op_name)
    tokens = [f"conf:{i:04d}" for i in range(shape.tokens)]
    emulator.inject_answer(
        Canned(shape.status, shape.body, shape.content_type), kinds=[KIND[(shape.api, op_name)]]
    )

    call = client.subscribe if op is Op.SUBSCRIBE else client.unsubscribe
    result = call(tokens, TOPIC)

    expected = shape.verdicts[op_name]
    for proven_endpoint in (False, True):
        got = tuple(
            verdict(result, i, op, endpoint_proven=proven_endpoint) for i in range(len(tokens))
        )
        want = tuple(
            ("dead" if proven_endpoint else "retried:no-verdict") if v == "dead-once-proven" else v
            for v in expected
        )
        assert got == want, f"{shape.source} (endpoint proven: {proven_endpoint})"
    assert emulator.members(TOPIC) == set()  # the canned answer stood in for FCM's work


def send_verdict(client, message: messaging.Message) -> str:
    """The corpus's word for what a publish makes of the answer (never a traceback)."""
    try:
        client.publish(message)
    except CredentialsError:
        return "credentials"
    except PublishError as error:
        if not error.definitely_not_sent:
            return "unknown"
        if error.retryable:
            return "refused-retryable"
        return "refused-third-party" if "APNs" in error.message else "refused"
    return "sent"


@pytest.mark.parametrize("transport", ["v1", "v1-direct", "legacy-iid"])
@pytest.mark.parametrize("shape", SEND_SHAPES, ids=lambda s: f"{s.id}-{s.status}")
def test_send_answer_shapes_of_the_sdk_suites(app, emulator, shape: SendShape, transport) -> None:
    client = make_client(app, transport)
    emulator.inject_answer(
        Canned(shape.status, shape.body, shape.content_type), kinds=["send"], count=1
    )

    got = send_verdict(client, messaging.Message(topic=TOPIC, data={"k": "v"}))

    assert got == shape.verdict, shape.source
    assert emulator.stats[("send", shape.status)] == 1  # asked once: no hidden resend


def test_the_corpus_covers_every_suite_and_api() -> None:
    sources = {s.source.split(" ", 1)[0] for s in (*V1_SHAPES, *IID_SHAPES, *SEND_SHAPES)}
    assert sources == {"firebase-admin-python", "firebase-admin-node", "firebase-admin-go"}
    assert {s.api for s in (*V1_SHAPES, *IID_SHAPES)} == {"v1", "iid"}
    verdicts = {v for s in (*V1_SHAPES, *IID_SHAPES) for vs in s.verdicts.values() for v in vs}
    assert {"confirmed", "dead", "dead-once-proven", "stop", "retried:no-verdict"} <= verdicts
    assert {s.verdict for s in SEND_SHAPES} >= {
        "sent",
        "refused",
        "refused-third-party",
        "credentials",
        "unknown",
    }
