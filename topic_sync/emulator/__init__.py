"""A local, in-memory fake of Firebase Cloud Messaging (FCM).

Why it exists: topic-sync must be tested end to end (the real firebase-admin SDK, real HTTP,
real concurrency) against FCM's per-token errors, whole-request failures and rate limits,
none of which can be provoked on demand against Google. The emulator serves the same paths
as ``https://fcm.googleapis.com`` and ``https://iid.googleapis.com``:

* v1 topic subscription API (one request per token):
  ``POST|GET /v1/projects/{p}/registrations/{token}/topicSubscriptions`` and
  ``GET|DELETE /v1/projects/{p}/registrations/{token}/topicSubscriptions/{topic}``;
* legacy Instance ID batch API: ``POST /iid/v1:batchAdd`` and ``POST /iid/v1:batchRemove``;
* ``POST /v1/projects/{p}/messages:send`` to a topic or a token (not a condition), which records
  every publish together with the tokens subscribed to the topic at that instant, so tests can
  check for misdelivery.

Its answers are the shapes FCM documents and the official Admin SDK suites replay. Faults
(per-token errors, whole-request errors, strange answers FCM is not known to send, a quota,
latency) are set in-process or through a small HTTP control API under ``/emulator/`` for an
emulator started in another process.
Standard library only; one lock guards all state.

``core`` holds ``FcmEmulator``, the one entry point, and ``serve()``; the parts are
``state`` (what FCM knows), ``faults`` (what to inject), ``quota`` (the rate limit's shapes),
``routes`` (request kinds), ``replies`` (how answers travel), ``shapes`` (the strange answers
of the fault menu), ``api`` (FCM's endpoints), ``control`` (``/emulator/``) and ``server``
(HTTP).
"""

from topic_sync.emulator.core import (
    MAX_BATCH_TOKENS,
    MAX_MESSAGE_BYTES,
    MAX_TOPICS_PER_TOKEN,
    REASON_WIRE,
    SHAPES,
    Canned,
    FcmEmulator,
    Publish,
    is_loopback,
    serve,
)

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
