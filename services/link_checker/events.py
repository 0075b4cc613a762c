"""The link checker's event entry point: link added/updated events become checks. A conclusive verdict is
published as a link-checked event (no database, so no outbox: the input is acked only after JetStream
acknowledged the output); an inconclusive answer is scheduled again in the retry queue before the input is
acked. While the checker's own outage pauses judging, messages are handed back to JetStream unchecked."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..contracts.events import Event, LinkAdded, LinkUpdated
from ..kit.core.clock import format_timestamp
from ..kit.core.validation import validate_username
from ..kit.messaging.consumer import Subscription
from .domain import CheckRequest, validate_check_url
from .service import CHECKER_CONSUMER, CheckerPaused, CheckResult, LinkCheckService, NetworkWatch


def check_request_from(data: dict[str, Any], author: str) -> CheckRequest:
    """The link to check from a link event's payload; InvalidInput naming the field for an event that
    can never be checked (the message is then terminated)."""
    link = LinkAdded.from_payload(data)  # added and updated events carry the same payload
    return CheckRequest(
        username=validate_username(author if link.username is None else link.username),
        url=validate_check_url(link.url),
        link_created_at=format_timestamp(link.link_created_at) if link.link_created_at else None,
    )


def subscriptions(service: LinkCheckService, watch: NetworkWatch,
                  record: Callable[[CheckRequest, CheckResult], None]) -> list[Subscription]:
    """`record` is told about every check made."""

    def on_link_event(event: Event) -> None:
        request = check_request_from(event.data, event.author)
        # CheckerPaused comes back after a probe interval (RetryLater); HostBusy, CheckInProgress, Redis or NATS
        # failures raise: the consumer naks the message with a growing delay, and JetStream redelivers it later.
        if watch.paused:
            status = watch.status()
            raise CheckerPaused(f"the checker's own network is {'in doubt' if status.state == 'confirming' else 'out'}"
                                f" ({status.failure}): judging is paused", watch.probe_interval_s)
        record(request, service.check_link(request, source_event_id=event.event_id))

    return [Subscription.to(LinkAdded, LinkUpdated, durable=CHECKER_CONSUMER, handler=on_link_event)]
