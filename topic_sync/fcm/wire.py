"""FCM's own limits and wire constants: facts about the service, in one place for the client.

The emulator keeps its own copy (emulator/limits.py), as the service it stands for would, so
a wrong value here fails a test against it rather than agreeing with itself.
"""

from __future__ import annotations

MAX_TOKENS_PER_CALL = 1000
"""Tokens in one SDK subscribe/unsubscribe call, and in one legacy batch request."""

MAX_TOPICS_PER_TOKEN = 2000
"""Topics one app instance (token) can be subscribed to."""

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
"""The `@type` of FCM's own error details in a v1 error body: evidence about a registration."""

ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
"""The `@type` of Google's ErrorInfo detail; its `reason` SERVICE_DISABLED means an API that
is not enabled for the project."""

RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
"""The `@type` of Google's RetryInfo detail: its `retryDelay` (a JSON Duration, "1.5s") says
when to ask again, as a `Retry-After` header does."""

TOPIC_MANAGEMENT_QUOTA = 3000
"""FCM's published topic-management quota: requests per second per project."""

TOPIC_NAME_PATTERN = r"[a-zA-Z0-9\-_.~%]{1,900}"
"""FCM's topic-name rule."""
