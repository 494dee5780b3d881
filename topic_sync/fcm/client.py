"""What every FCM transport offers the engine: the interface, its typed answers, its errors.

Three transports sit behind `FcmClient`, one module each, all over firebase-admin's
credentials: `v1` (fcm/v1_sdk.py: the per-token FCM topic subscription API through the SDK's
own calls), `v1-direct` (fcm/v1_direct.py, the default: the same requests, byte for byte,
over a lean client of our own) and `legacy-iid` (fcm/legacy_iid.py: the Instance ID batch
API, until its 2027-09-29 turndown). Publishing and listing go through the SDK for all three
(fcm/sdk_messaging.py), which each transport holds rather than inherits.

Whatever goes wrong, a subscribe or unsubscribe call answers with one typed verdict per token
(`TokenAnswer`: the raw reason and whether the answer is evidence about that token at all);
only proven answers may confirm a removal or mark a token dead (see error_table.rule_for). A
success is proven like an error: every transport reads FCM's raw answer by one rule
(answers.py), so a 2xx of no documented shape or a redirect is no verdict, whatever the SDK
made of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from topic_sync.errors import CredentialsError, TopicSyncError
from topic_sync.fcm.answers import RawAnswer, TokenAnswer, fcm_error_code, google_error
from topic_sync.fcm.target import FcmTarget
from topic_sync.fcm.wire import MAX_TOKENS_PER_CALL

if TYPE_CHECKING:
    from firebase_admin import messaging

CREDENTIALS_HELP = (
    "FCM rejected topic-sync's credentials ({reason}). Check that "
    "GOOGLE_APPLICATION_CREDENTIALS points at a service account key of this Firebase "
    "project (or that application default credentials are set up), that the project id "
    "is right, and that the account has the Firebase Cloud Messaging Admin role."
)


@dataclass(frozen=True)
class BatchResult:
    """One typed verdict per token (`answers[i]` for token i, in the order given), and what
    the answer said about the whole request.

    `answers[i].proven` is True when the answer for token i is about that token: a success of
    the documented shape, a per-token result of a batch response of the documented shape, or
    a v1 4xx carrying FCM's error details. `answers[i].bare_not_found` marks a v1 404
    NOT_FOUND without FCM's details: a verdict only on an endpoint the run has seen answer
    per token (engine/drain.py). An unproven success never occurs: an unproven success is no
    success.
    """

    answers: tuple[TokenAnswer, ...]
    retry_after: float | None = None
    whole_request: bool = False

    @classmethod
    def whole(cls, reason: str, size: int, retry_after: float | None = None) -> BatchResult:
        """One error for the whole request: the same reason for every token, no verdict."""
        return cls((TokenAnswer(reason, False),) * size, retry_after, whole_request=True)

    @classmethod
    def per_token(cls, reasons: Sequence[str | None]) -> BatchResult:
        """Answers each about its own token (a batch response's per-token results)."""
        return cls(tuple(TokenAnswer(reason, True) for reason in reasons))

    @classmethod
    def of_answers(cls, answers: Sequence[TokenAnswer]) -> BatchResult:
        """One v1 answer per token, each read by the evidence rule."""
        return cls(tuple(answers))

    @property
    def reasons(self) -> tuple[str | None, ...]:
        """Each token's raw reason (None: success)."""
        return tuple(a.reason for a in self.answers)

    @property
    def proven(self) -> tuple[bool, ...]:
        return tuple(a.proven for a in self.answers)

    @property
    def bare_not_found(self) -> tuple[bool, ...]:
        """Each token's bare-404 flag; empty when no token has one."""
        flags = tuple(a.bare_not_found for a in self.answers)
        return flags if any(flags) else ()


class FcmClient(Protocol):
    """What the engine needs of FCM, whichever transport carries it.

    subscribe and unsubscribe take at most MAX_TOKENS_PER_CALL tokens; requests not sent by
    `give_up_at` (time.monotonic) are not sent and answer a retryable, unproven verdict.
    """

    @property
    def transport(self) -> str: ...

    @property
    def target(self) -> FcmTarget: ...

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


def check_batch(tokens: Sequence[str]) -> list[str]:
    tokens = list(tokens)
    if not 0 < len(tokens) <= MAX_TOKENS_PER_CALL:
        raise ValueError(f"a batch holds 1 to {MAX_TOKENS_PER_CALL} tokens, not {len(tokens)}")
    return tokens
