"""The FCM client topic-sync uses: subscribe, unsubscribe and publish.

Three transports sit behind one interface, all over firebase-admin's credentials:
`v1` (the per-token FCM topic subscription API through the SDK's own calls),
`v1-direct` (the default: the same requests, byte for byte, over persistent connections;
see direct.py) and `legacy-iid` (the Instance ID batch API, until its 2027-09-29
turndown). Whatever goes wrong, a subscribe
or unsubscribe call answers with one raw reason per token and, per token, whether
that answer is evidence about the token at all (`proven`): only proven answers
may confirm a removal or mark a token dead (see error_table.rule_for). A success is
proven like an error: every transport reads FCM's raw answer by one rule (answers.py),
so a 2xx of no documented shape or a redirect is no verdict, whatever the SDK made of it.
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
from topic_sync.fcm.answers import (
    REDIRECTED,
    UNEXPECTED_ANSWER,
    RawAnswer,
    TokenAnswer,
    fcm_error_code,
    google_error,
    has_fcm_details,
    message_name,
    read_batch_answer,
)
from topic_sync.fcm.sdk_bridge import (
    list_topic_subscriptions,
    mounted_adapter,
    registration_segment,
    wait_hint,
)
from topic_sync.fcm.target import FcmTarget
from topic_sync.fcm.wire import ERROR_INFO_TYPE, FCM_ERROR_TYPE, MAX_TOKENS_PER_CALL
from topic_sync.redact import shorten
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

    `proven[i]` is True when the answer for token i is about that token: a success of the
    documented shape, a per-token result of a batch response of the documented shape, or a
    v1 4xx carrying FCM's error details. `bare_not_found[i]` marks a v1 404 NOT_FOUND without
    FCM's details: a verdict only on an endpoint the run has seen answer per token
    (engine/drain.py). An unproven None never occurs: an unproven success is no success.
    """

    reasons: tuple[str | None, ...]
    proven: tuple[bool, ...]
    retry_after: float | None = None
    whole_request: bool = False
    bare_not_found: tuple[bool, ...] = ()

    @classmethod
    def whole(cls, reason: str, size: int, retry_after: float | None = None) -> BatchResult:
        """One error for the whole request: the same reason for every token, no verdict."""
        return cls((reason,) * size, (False,) * size, retry_after, whole_request=True)

    @classmethod
    def per_token(cls, reasons: Sequence[str | None]) -> BatchResult:
        """Answers each about its own token (a batch response's per-token results)."""
        return cls(tuple(reasons), (True,) * len(reasons))

    @classmethod
    def of_answers(cls, answers: Sequence[TokenAnswer]) -> BatchResult:
        """One v1 answer per token, each read by the evidence rule."""
        bare = tuple(a.bare_not_found for a in answers)
        return cls(
            tuple(a.reason for a in answers),
            tuple(a.proven for a in answers),
            bare_not_found=bare if any(bare) else (),
        )

    def is_bare_not_found(self, index: int) -> bool:
        return bool(self.bare_not_found) and self.bare_not_found[index]


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


def _without_token(text: str, token: str) -> str:
    """An HTTP library's message (which quotes the URL) with the token in it shortened."""
    return text.replace(registration_segment(token), shorten(token)).replace(token, shorten(token))


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
# A publish is resent only after an answer proving the message was not taken: a 429.
RETRYABLE_PUBLISH_STATUSES = (429,)
# FcmError codes about the APNs certificate or web-push key uploaded to Firebase: FCM's
# credential towards Apple and browsers, not topic-sync's service account.
THIRD_PARTY_AUTH_CODES = ("THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR")
THIRD_PARTY_HELP = (
    "FCM refused the APNs certificate or web-push key uploaded to Firebase ({code}): that is "
    "the credential FCM uses to reach Apple or browsers, not topic-sync's service account, "
    "which FCM accepted. Check it in the Firebase console (Project settings, Cloud Messaging)"
)


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


class PublishError(TopicSyncError):
    """FCM refused or failed the publish.

    `definitely_not_sent` only when the answer proves FCM did not take the message (see
    `send_failure`); otherwise nobody knows, and the intent to publish must stay.
    `retryable` when it was not taken and trying again may work (quota).
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


def _said(answer: RawAnswer) -> str:
    """What a send's answer said, for people: status, Google's code and message, FCM's code."""
    body = answer.json()
    error = google_error(body)
    if error is None:
        return answer.describe()
    fcm = fcm_error_code(body)
    text = f"HTTP {answer.status} {error['status']}"
    if isinstance(error.get("message"), str) and error["message"]:
        text += f": {error['message']}"
    return text + (f" (FCM error {fcm})" if fcm else "")


def send_failure(
    answer: RawAnswer, retry_after: float | None = None, *, validate_only: bool = False
) -> TopicSyncError:
    """What a send's answer that names no message means: refused, or unknown.

    The HTTP status class decides before any error code. Only a 4xx in Google's error format
    (other than 408) proves FCM refused the message before taking it; a 2xx that names no
    message, a redirect, a 5xx whatever its details, or a 4xx in another format (a proxy's
    page, an `error` that is a bare string) leave open whether it went out. Among refusals,
    UNAUTHENTICATED / PERMISSION_DENIED / SENDER_ID_MISMATCH are topic-sync's credentials
    (or project); THIRD_PARTY_AUTH_ERROR / APNS_AUTH_ERROR are the APNs or web-push
    credential uploaded to Firebase. A validation delivers nothing, so one answered with a
    5xx may be asked again.
    """
    body = answer.json()
    error = google_error(body)
    fcm = fcm_error_code(body)
    said = _said(answer)
    if not 400 <= answer.status < 500 or answer.status == 408 or error is None:
        if 200 <= answer.status < 300:
            said = f"{said}, which names no message"
        if fcm in THIRD_PARTY_AUTH_CODES:
            said += " (" + THIRD_PARTY_HELP.format(code=fcm) + ")"
        return PublishError(
            f"FCM's answer proves nothing about the message: {said}",
            definitely_not_sent=False,
            retryable=validate_only and answer.status in RETRYABLE_SEND_STATUSES,
            retry_after=retry_after,
        )
    if fcm in THIRD_PARTY_AUTH_CODES:
        return PublishError(
            f"FCM refused the message: {said}. " + THIRD_PARTY_HELP.format(code=fcm),
            definitely_not_sent=True,
        )
    if error["status"] in ("UNAUTHENTICATED", "PERMISSION_DENIED") or fcm == "SENDER_ID_MISMATCH":
        return CredentialsError(CREDENTIALS_HELP.format(reason=fcm or error["status"]))
    return PublishError(
        f"FCM refused the message: {said}",
        definitely_not_sent=True,
        retryable=answer.status in RETRYABLE_PUBLISH_STATUSES,
        retry_after=retry_after,
    )


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
    if response is None or not 400 <= response.status_code < 500:
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
        evidence = mounted_adapter(self.app).evidence
        if self.transport == "v1":
            call = messaging.subscribe_to_topic if subscribe else messaging.unsubscribe_from_topic
            # v1 never raises for HTTP errors: every answer arrives per token, reduced by the
            # SDK to a reason string (or to nothing, for any 2xx). What FCM really answered
            # was read by our adapter beneath the SDK, by the evidence rule (answers.py).
            method = "POST" if subscribe else "DELETE"
            evidence.forget(method, batch, topic)
            reasons = _reasons(call(batch, topic, app=self.app), len(batch))
            return BatchResult.of_answers(
                [
                    _settled(reason, evidence.take(method, token, topic))
                    for token, reason in zip(batch, reasons, strict=True)
                ]
            )
        call = (
            messaging.subscribe_to_topic_legacy
            if subscribe
            else messaging.unsubscribe_from_topic_legacy
        )
        path = "v1:batchAdd" if subscribe else "v1:batchRemove"
        evidence.take_batch(path, topic, batch)  # an earlier attempt's answer is not this one's
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                call(batch, topic, app=self.app)
        except fb_exceptions.FirebaseError as error:
            # An error for the whole batch says nothing about any one token, whatever its
            # code: a 404 or 400 here must never confirm a removal or mark a token dead.
            raw = evidence.take_batch(path, topic, batch)
            reason = _whole_reason(raw) or _whole_request_reason(error)
            return BatchResult.whole(reason, len(batch), retry_after=_retry_after(error))
        except (ValueError, TypeError, AttributeError, KeyError):
            # firebase-admin could not read a 200 (no `results`, results of another shape).
            raw = evidence.take_batch(path, topic, batch)
            if raw is None or read_batch_answer(raw, batch) is not None:
                raise  # not an answer of FCM's it choked on: a fault of ours
            return BatchResult.whole(UNEXPECTED_ANSWER, len(batch))
        # The SDK's reading of `results` is no evidence (a short list confirms the tokens it
        # leaves out): the raw answer is read by our rule instead.
        return legacy_result(evidence.take_batch(path, topic, batch), batch)

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
        retry = _retry_after(failure) if isinstance(failure, fb_exceptions.FirebaseError) else None
        raise send_failure(answer, retry, validate_only=validate_only) from failure


def _settled(sdk_reason: str | None, noted: TokenAnswer | None) -> TokenAnswer:
    """One v1 token's answer: what the adapter read beneath the SDK, when it read one."""
    if noted is None:
        # No answer reached the adapter (no connection, out of time): no verdict.
        return TokenAnswer(sdk_reason or UNEXPECTED_ANSWER, False)
    if noted.reason is None and sdk_reason is not None:
        return TokenAnswer(sdk_reason, False)  # the SDK failed it after a good answer
    return noted


def legacy_result(raw: RawAnswer | None, tokens: Sequence[str]) -> BatchResult:
    """A legacy batch's result from the raw answer to it: per token only when it holds exactly
    one result object per token sent; otherwise a whole-request no-verdict."""
    per_token = read_batch_answer(raw, tokens) if raw is not None else None
    if per_token is None:
        return BatchResult.whole(_whole_reason(raw) or UNEXPECTED_ANSWER, len(tokens))
    return BatchResult.per_token(per_token)


def _whole_reason(raw: RawAnswer | None) -> str | None:
    """The reason of a legacy batch answer that is about no token, when the raw answer says
    more than the SDK's exception: a redirect, or a 2xx of no known shape (one cut short is
    no answer at all, as on v1)."""
    if raw is None or raw.body is None:
        return None
    if raw.redirect:
        return REDIRECTED
    return UNEXPECTED_ANSWER if 200 <= raw.status < 300 else None


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
