"""The link service's event entry point: what it consumes, and how a payload becomes a use case
call. Thin, like http.py: decode the contract, validate it by the domain's rules, call a use case."""
from __future__ import annotations

from ..contracts.events import Event, LinkChecked
from ..kit.core.validation import validate_username
from ..kit.messaging.consumer import Subscription
from .domain import CheckResult, validate_url
from .service import CHECK_RESULTS_CONSUMER, LinkService

MAX_REASON_LENGTH = 500


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
        reason=checked.reason[:MAX_REASON_LENGTH] if checked.reason is not None else None,
        link_created_at=checked.link_created_at,
    )


def subscriptions(service: LinkService) -> list[Subscription]:
    def on_link_checked(event: Event) -> bool:
        return service.apply_check_result(event.event_id, check_result_from_event(event))

    return [Subscription.to(LinkChecked, durable=CHECK_RESULTS_CONSUMER, handler=on_link_checked)]
