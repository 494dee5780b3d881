"""The FCM client topic-sync uses: subscribe, unsubscribe and publish.

Three transports sit behind one interface, all over firebase-admin's credentials:
`v1` (the per-token FCM topic subscription API through the SDK's own calls),
`v1-direct` (the default: the same requests, byte for byte, over persistent connections;
see direct.py) and `legacy-iid` (the Instance ID batch API, until its 2027-09-29
turndown). Whatever goes wrong, a subscribe
or unsubscribe call answers with one raw reason per token and, per token, whether
that answer is evidence about the token at all (`proven`): only proven answers
may confirm a removal or mark a token dead (see error_table.rule_for).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import firebase_admin
import google.auth.exceptions
import requests
import urllib3
from firebase_admin import exceptions as fb_exceptions
from firebase_admin import messaging

from topic_sync.errors import CredentialsError, TopicSyncError
from topic_sync.fcm.sdk_bridge import (
    list_topic_subscriptions,
    mounted_adapter,
    wait_hint,
)
from topic_sync.fcm.target import FcmTarget
from topic_sync.fcm.wire import ERROR_INFO_TYPE, FCM_ERROR_TYPE, MAX_TOKENS_PER_CALL
from topic_sync.states import FcmApi

CREDENTIALS_HELP = (
    "FCM rejected topic-sync's credentials ({reason}). Check that "
    "GOOGLE_APPLICATION_CREDENTIALS points at a service account key of this Firebase "
    "project (or that application default credentials are set up), that the project id "
    "is right, and that the account has the Firebase Cloud Messaging Admin role."
)


@dataclass(frozen=True)
class BatchResult:
    """Per-token raw reasons (None = success), in the order the tokens were given.

    `proven[i]` is True when the answer for token i is about that token: a success, a
    per-token result of a batch response, or a v1 error carrying FCM's error details.
    """

    reasons: tuple[str | None, ...]
    proven: tuple[bool, ...]
    retry_after: float | None = None
    whole_request: bool = False

    @classmethod
    def whole(cls, reason: str, size: int, retry_after: float | None = None) -> BatchResult:
        """One error for the whole request: the same reason for every token, no verdict."""
        return cls((reason,) * size, (False,) * size, retry_after, whole_request=True)

    @classmethod
    def per_token(cls, reasons: Sequence[str | None]) -> BatchResult:
        """Answers each about its own token (a batch response's per-token results)."""
        return cls(tuple(reasons), (True,) * len(reasons))


class FcmClient(Protocol):
    transport: str
    target: FcmTarget

    def subscribe(
        self, tokens: Sequence[str], topic: str, *, give_up_at: float | None = None
    ) -> BatchResult: ...

    def unsubscribe(
        self, tokens: Sequence[str], topic: str, *, give_up_at: float | None = None
    ) -> BatchResult: ...

    def publish(self, message: messaging.Message, *, validate_only: bool = False) -> str: ...

    def list_topics(self, token: str) -> set[str]: ...


class ListError(TopicSyncError):
    """Listing a token's topics failed.

    `not_found` means FCM itself said it does not know the token (a 404 with FCM's error
    details); a bare 404 (an API not enabled, a front end) is no such evidence.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        retry_after: float | None,
        proven: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.proven = proven

    @property
    def not_found(self) -> bool:
        return self.status == 404 and self.proven

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_SEND_STATUSES


RETRYABLE_SEND_STATUSES = (429, 500, 503, 504)
# A publish is resent only after an answer proving the message was not taken.
RETRYABLE_PUBLISH_STATUSES = (429, 503)


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


def _publish_refused(response: requests.Response | None) -> bool:
    """Whether an error answer to a send proves that FCM did not take the message.

    Proof is an answer in Google's error format that refused the request before it was
    served: any 4xx (invalid, unauthorised, over quota) or a 503 UNAVAILABLE. No answer
    (a lost connection, a timeout), a body in another format (a proxy's 502), a 500
    INTERNAL or a 504 DEADLINE_EXCEEDED leave open whether it went out.
    """
    if response is None:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("status"), str):
        return False
    status = response.status_code
    return (400 <= status < 500 and status != 408) or (
        status == 503 and error["status"] == "UNAVAILABLE"
    )


class PublishError(TopicSyncError):
    """FCM refused or failed the publish.

    `definitely_not_sent` only when the answer proves FCM did not take the message (see
    `_publish_refused`); otherwise nobody knows, and the intent to publish must stay.
    `retryable` when it was not taken and trying again may work (quota, unavailable).
    """

    def __init__(
        self,
        message: str,
        *,
        definitely_not_sent: bool,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.definitely_not_sent = definitely_not_sent
        self.retryable = retryable
        self.retry_after = retry_after


def _retry_after(error: fb_exceptions.FirebaseError) -> float | None:
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


def _whole_request_reason(error: fb_exceptions.FirebaseError) -> str:
    """The error code of a failed batch, in the vocabulary of per-token reasons."""
    return str(error.code or "UNKNOWN_ERROR").upper()


def _answer_has_details(response: requests.Response | None) -> bool:
    from topic_sync.fcm.sdk_bridge import has_fcm_details

    if response is None:
        return False
    try:
        return has_fcm_details(response.json())
    except ValueError:
        return False


def check_batch(tokens: Sequence[str]) -> list[str]:
    tokens = list(tokens)
    if not 0 < len(tokens) <= MAX_TOKENS_PER_CALL:
        raise ValueError(f"a batch holds 1 to {MAX_TOKENS_PER_CALL} tokens, not {len(tokens)}")
    return tokens


def _reasons(response: messaging.TopicManagementResponse, size: int) -> list[str | None]:
    reasons: list[str | None] = [None] * size
    for error in response.errors:
        reasons[error.index] = str(error.reason)
    return reasons


class SdkClient:
    """Both transports, through the firebase-admin app given."""

    def __init__(self, app: firebase_admin.App, transport: str = "v1") -> None:
        if transport not in ("v1", "legacy-iid"):
            raise ValueError(f"SdkClient speaks v1 or legacy-iid, not {transport!r}")
        self.app = app
        self.transport = transport
        redirect = mounted_adapter(app).target
        emulator_host = redirect.removeprefix("http://") if redirect else None
        self.target = FcmTarget.of(str(app.project_id), emulator_host)

    @property
    def api(self) -> FcmApi:
        """The API its topic requests go to (each has a quota of its own)."""
        return FcmApi.IID if self.transport == "legacy-iid" else FcmApi.V1

    def subscribe(
        self, tokens: Sequence[str], topic: str, *, give_up_at: float | None = None
    ) -> BatchResult:
        """Subscribe a batch; requests not sent by `give_up_at` (time.monotonic) are not sent
        and answer a retryable, unproven NOT_SENT."""
        return self._manage(tokens, topic, subscribe=True, give_up_at=give_up_at)

    def unsubscribe(
        self, tokens: Sequence[str], topic: str, *, give_up_at: float | None = None
    ) -> BatchResult:
        return self._manage(tokens, topic, subscribe=False, give_up_at=give_up_at)

    def _manage(
        self, tokens: Sequence[str], topic: str, *, subscribe: bool, give_up_at: float | None
    ) -> BatchResult:
        batch = check_batch(tokens)
        budgets = mounted_adapter(self.app).budgets
        if give_up_at is not None:
            budgets.register(batch[:1] if self.transport != "v1" else batch, topic, give_up_at)
        try:
            return self._call(batch, topic, subscribe=subscribe)
        finally:
            if give_up_at is not None:
                budgets.release(batch, topic)

    def _call(self, batch: list[str], topic: str, *, subscribe: bool) -> BatchResult:
        if self.transport == "v1":
            call = messaging.subscribe_to_topic if subscribe else messaging.unsubscribe_from_topic
            # v1 never raises for HTTP errors: every failure arrives per token, reduced by the
            # SDK to a reason string. Whether that answer carried FCM's details (evidence about
            # the token) was noted by our adapter beneath the SDK, from the raw response.
            evidence = mounted_adapter(self.app).evidence
            reasons = _reasons(call(batch, topic, app=self.app), len(batch))
            method = "POST" if subscribe else "DELETE"
            proven = [
                reason is None or evidence.take(method, token, topic)
                for token, reason in zip(batch, reasons, strict=True)
            ]
            return BatchResult(tuple(reasons), tuple(proven))
        call = (
            messaging.subscribe_to_topic_legacy
            if subscribe
            else messaging.unsubscribe_from_topic_legacy
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                response = call(batch, topic, app=self.app)
        except fb_exceptions.FirebaseError as error:
            # An error for the whole batch says nothing about any one token, whatever its
            # code: a 404 or 400 here must never confirm a removal or mark a token dead.
            return BatchResult.whole(
                _whole_request_reason(error), len(batch), retry_after=_retry_after(error)
            )
        return BatchResult.per_token(_reasons(response, len(batch)))

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
                f"listing the topics of a token failed: {error}",
                status=status,
                retry_after=_hint(response),
                proven=_answer_has_details(response),
            ) from error

    def publish(self, message: messaging.Message, *, validate_only: bool = False) -> str:
        try:
            return str(messaging.send(message, dry_run=validate_only, app=self.app))
        except fb_exceptions.FirebaseError as error:
            code = _whole_request_reason(error)
            if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                raise CredentialsError(CREDENTIALS_HELP.format(reason=code)) from error
            if error.http_response is None:
                # Nobody answered. A connection that was never made sent nothing (the intent is
                # released: a rerun sends without --republish); one lost after the request
                # was written leaves open whether FCM took it. Either way, no retry here: an
                # FCM that cannot be reached is for a person to look at.
                where = self.target.endpoint
                raise PublishError(
                    f"no answer from FCM ({where}): {error.cause or error}",
                    definitely_not_sent=_never_connected(error),
                ) from error
            refused = _publish_refused(error.http_response)
            status = error.http_response.status_code
            raise PublishError(
                f"FCM refused the message: {code}: {error}",
                definitely_not_sent=refused,
                retryable=refused and status in RETRYABLE_PUBLISH_STATUSES,
                retry_after=_retry_after(error),
            ) from error


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
        _detail(details, FCM_ERROR_TYPE, "errorCode"),
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
