"""Publishing and listing through firebase-admin: the calls every transport makes alike.

Each transport (v1_sdk, v1_direct, legacy_iid) holds one `SdkMessaging` for its publish and
its topic list, and for the FCM target its app points at, instead of inheriting them. The
publish goes through the SDK's own `messaging.send`; what FCM answered is read from the raw
answer our adapter noted beneath it (sdk_bridge.Evidence), by the rule of answers.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import firebase_admin
import google.auth.exceptions
import requests
import urllib3
from firebase_admin import exceptions as fb_exceptions
from firebase_admin import messaging

from topic_sync.errors import CredentialsError
from topic_sync.fcm.answers import fcm_error_code, has_fcm_details, message_name
from topic_sync.fcm.client import CREDENTIALS_HELP, ListError, PublishError, send_failure
from topic_sync.fcm.sdk_bridge import (
    list_topic_subscriptions,
    mounted_adapter,
    registration_segment,
    wait_hint,
)
from topic_sync.fcm.target import FcmTarget
from topic_sync.fcm.wire import ERROR_INFO_TYPE
from topic_sync.redact import shorten


def _without_token(text: str, token: str) -> str:
    """An HTTP library's message (which quotes the URL) with the token in it shortened."""
    return text.replace(registration_segment(token), shorten(token)).replace(token, shorten(token))


def _never_connected(error: BaseException) -> bool:
    """Whether a request failed before a connection existed (so it was never written)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            urllib3.exceptions.NewConnectionError
            | urllib3.exceptions.ConnectTimeoutError
            | requests.exceptions.ConnectTimeout,
        ):
            return True
        reason = getattr(current, "reason", None)
        nested = reason if isinstance(reason, BaseException) else None
        cause = getattr(current, "cause", None)
        current = (
            nested
            or (cause if isinstance(cause, BaseException) else None)
            or current.__cause__
            or current.__context__
            or (
                current.args[0]
                if current.args and isinstance(current.args[0], BaseException)
                else None
            )
        )
    return False


def error_wait_hint(error: fb_exceptions.FirebaseError) -> float | None:
    """When a failed SDK call's answer said to ask again."""
    return _hint(error.http_response)


def _hint(response: requests.Response | None) -> float | None:
    """When an error answer said to ask again (Retry-After or a RetryInfo detail)."""
    if response is None:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    return wait_hint(response.headers, body)


def whole_request_reason(error: fb_exceptions.FirebaseError) -> str:
    """The error code of a failed batch, in the vocabulary of per-token reasons."""
    return str(error.code or "UNKNOWN_ERROR").upper()


def _answer_has_details(response: requests.Response | None) -> bool:
    if response is None or not 400 <= response.status_code < 500:
        return False
    try:
        return has_fcm_details(response.json())
    except ValueError:
        return False


class SdkMessaging:
    """Publish and list through the firebase-admin app given; the target it points at."""

    def __init__(self, app: firebase_admin.App) -> None:
        self.app = app
        redirect = mounted_adapter(app).target
        emulator_host = redirect.removeprefix("http://") if redirect else None
        self.target = FcmTarget.of(str(app.project_id), emulator_host)

    def list_topics(self, token: str) -> set[str]:
        """Every topic FCM holds for the token (the v1 list API; both transports)."""
        try:
            return set(list_topic_subscriptions(self.app, token))
        except requests.exceptions.RequestException as error:
            response = error.response
            status = response.status_code if response is not None else None
            if status in (401, 403):
                raise CredentialsError(
                    CREDENTIALS_HELP.format(reason=f"HTTP {status} listing subscriptions")
                ) from error
            raise ListError(
                f"listing the topics of token {shorten(token)} failed: "
                + _without_token(str(error), token),
                status=status,
                retry_after=_hint(response),
                proven=_answer_has_details(response),
            ) from error

    def publish(self, message: messaging.Message, *, validate_only: bool = False) -> str:
        """Send (or validate) a message; its name only on an answer of the documented shape.

        The SDK sends; what FCM answered is read from the raw answer our adapter noted
        beneath it (the SDK returns whatever `name` holds, and raises KeyError or
        AttributeError on some answers). See `send_failure` for what a failure means.
        """
        evidence = mounted_adapter(self.app).evidence
        evidence.note_send(None)
        failure: Exception | None = None
        try:
            messaging.send(message, dry_run=validate_only, app=self.app)
        except fb_exceptions.FirebaseError as error:
            failure = error
        except (ValueError, TypeError, AttributeError, KeyError) as error:
            failure = error  # the SDK choked on the answer, or refused the message itself
        answer = evidence.take_send()
        if answer is None:
            if not isinstance(failure, fb_exceptions.FirebaseError):
                # Nothing was answered because nothing was sent: the SDK refused the message.
                raise failure or PublishError("no answer from FCM", definitely_not_sent=False)
            # Nobody answered. A connection that was never made sent nothing (the intent is
            # released: a rerun sends without --republish); one lost after the request
            # was written leaves open whether FCM took it. Either way, no retry here: an
            # FCM that cannot be reached is for a person to look at.
            raise PublishError(
                f"no answer from FCM ({self.target.endpoint}): {failure.cause or failure}",
                definitely_not_sent=_never_connected(failure),
            ) from failure
        name = message_name(answer)
        if name is not None:
            return name
        refused = isinstance(failure, fb_exceptions.FirebaseError)
        retry = error_wait_hint(failure) if refused else None
        raise send_failure(answer, retry, validate_only=validate_only) from failure


DOCTOR_TOKEN = "topic-sync-doctor-probe:not-a-registration-token"
"""A registration token no device can have (FCM's are about 160 characters of its own
shape): `doctor` lists its topics, a read that cannot touch any real member."""


@dataclass(frozen=True)
class ApiAnswer:
    """What FCM's topic API answered to a probe: HTTP status (None: no answer at all),
    Google's error status and message, ErrorInfo's reason (SERVICE_DISABLED: the API is
    not enabled) and FCM's own error code (evidence FCM itself looked at the token)."""

    status: int | None
    google_status: str | None = None
    message: str = ""
    reason: str | None = None
    fcm_code: str | None = None


def _detail(details: object, kind: str, key: str) -> str | None:
    for item in details if isinstance(details, list) else ():
        if isinstance(item, dict) and item.get("@type") == kind and item.get(key):
            return str(item[key])
    return None


def _api_answer(response: requests.Response) -> ApiAnswer:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ApiAnswer(response.status_code, message=response.text.strip()[:300])
    details = error.get("details")
    return ApiAnswer(
        response.status_code,
        str(error["status"]) if error.get("status") else None,
        str(error.get("message") or ""),
        _detail(details, ERROR_INFO_TYPE, "reason"),
        fcm_error_code(body),
    )


def probe_topic_api(app: firebase_admin.App, token: str = DOCTOR_TOKEN) -> ApiAnswer:
    """List a dummy registration's topics through the v1 API (a read: nothing changes)."""
    try:
        topics = list(list_topic_subscriptions(app, token))
    except requests.exceptions.RequestException as error:
        if error.response is None:
            return ApiAnswer(None, message=str(error))
        return _api_answer(error.response)
    except google.auth.exceptions.GoogleAuthError as error:
        return ApiAnswer(None, message=f"no access token: {error}")
    return ApiAnswer(200, message=f"{len(topics)} topics")
