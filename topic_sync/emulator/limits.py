"""FCM's limits and wire constants as the emulator (a fake of the service) knows them.

A copy on purpose, not an import of topic_sync.fcm.wire: the emulator stands for FCM, so a
wrong constant on the client's side (a batch limit, an error detail's `@type`) meets the
service's value here and fails a test, instead of agreeing with itself. Standard library only.
"""

from __future__ import annotations

MAX_TOKENS_PER_CALL = 1000
"""Registration tokens in one legacy batch request (and in one SDK call)."""

MAX_TOPICS_PER_TOKEN = 2000
"""Topics one app instance can be subscribed to; one more is TOO_MANY_TOPICS."""

TOPIC_NAME_PATTERN = r"[a-zA-Z0-9\-_.~%]{1,900}"
"""FCM's topic-name rule."""

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
"""The `@type` of FCM's own error details in a v1 error body."""

ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
"""The `@type` of Google's ErrorInfo detail (reason SERVICE_DISABLED: API not enabled)."""

RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
"""The `@type` of Google's RetryInfo detail (`retryDelay`, a JSON Duration)."""
