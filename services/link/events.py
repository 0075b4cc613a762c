"""The link service's event entry point: what it consumes, and how a payload becomes a use case
call. Thin, like http.py: decode the contract, validate it by the domain's rules, call a use case."""
from __future__ import annotations

from ..contracts.events import Event, LinkChecked, LinkCheckInconclusive
from ..kit.core.errors import InvalidInput
from ..kit.core.validation import validate_username
from ..kit.messaging.consumer import Subscription
from .domain import CheckResult, InconclusiveCheck, InconclusiveResult, validate_url
from .service import CHECK_ATTEMPTS_CONSUMER, CHECK_RESULTS_CONSUMER, LinkService

MAX_REASON_LENGTH = 500
MAX_FAILURE_LENGTH = 64


def _storable(text: str, max_length: int) -> str:
    """Text from the checker as PostgreSQL can store it: no NUL, no unpaired surrogate (replaced), trimmed."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()[:max_length]


def check_result_from_event(event: Event) -> CheckResult:
    """A link-checked event (published by the link checker) as a domain value; InvalidInput naming the
    field for a payload that can never be applied."""
    checked = LinkChecked.from_event(event)
    return CheckResult(
        username=validate_username(checked.username),
        url=validate_url(checked.url),
        status=checked.status,
        checked_at=checked.checked_at,
        http_status=checked.http_status,
        reason=None if checked.reason is None else _storable(checked.reason, MAX_REASON_LENGTH),
        link_created_at=checked.link_created_at,
    )


def inconclusive_result_from_event(event: Event) -> InconclusiveResult:
    """A link-check-inconclusive event (published by the link checker) as a domain value; InvalidInput naming the
    field for a payload that can never be applied."""
    attempt = LinkCheckInconclusive.from_event(event)
    reason, failure = _storable(attempt.reason, MAX_REASON_LENGTH), _storable(attempt.failure, MAX_FAILURE_LENGTH + 1)
    if not reason:
        raise InvalidInput("reason", "is required")
    if not failure or len(failure) > MAX_FAILURE_LENGTH:
        raise InvalidInput("failure", f"must be 1-{MAX_FAILURE_LENGTH} characters")
    if attempt.attempts < 1:
        raise InvalidInput("attempts", "must be at least 1")
    if attempt.given_up != (attempt.next_attempt_at is None):
        raise InvalidInput("next_attempt_at", "is null exactly when the check was given up")
    return InconclusiveResult(
        username=validate_username(attempt.username),
        url=validate_url(attempt.url),
        check=InconclusiveCheck(
            attempted_at=attempt.attempted_at, reason=reason, failure=failure,
            attempts=attempt.attempts, next_attempt_at=attempt.next_attempt_at, given_up=attempt.given_up,
            http_status=attempt.http_status,
        ),
        link_created_at=attempt.link_created_at,
    )


def subscriptions(service: LinkService) -> list[Subscription]:
    def on_link_checked(event: Event) -> bool:
        return service.apply_check_result(event.event_id, check_result_from_event(event))

    def on_inconclusive_check(event: Event) -> bool:
        return service.apply_inconclusive_check(event.event_id, inconclusive_result_from_event(event))

    return [Subscription.to(LinkChecked, durable=CHECK_RESULTS_CONSUMER, handler=on_link_checked),
            Subscription.to(LinkCheckInconclusive, durable=CHECK_ATTEMPTS_CONSUMER, handler=on_inconclusive_check)]
