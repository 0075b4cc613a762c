"""The news service's event entry point: link events fan out to feeds, follow events keep the
follower projection. Payloads are decoded and checked here; the use cases get domain values."""
from __future__ import annotations

import time
from collections.abc import Callable

from ..contracts.events import LINK_EVENTS, Event, Followed, FollowEvent, LinkEvent, Unfollowed
from ..kit.core.errors import InvalidInput
from ..kit.core.validation import validate_username
from ..kit.messaging.consumer import Subscription
from .domain import FeedItem, to_millis
from .service import NewsService

_LINK_EVENTS_BY_SUBJECT: dict[str, type[LinkEvent]] = {contract.subject: contract for contract in LINK_EVENTS}


def feed_item_from_event(event: Event) -> FeedItem:
    """InvalidInput naming the field for an event that is not a usable link event."""
    contract = _LINK_EVENTS_BY_SUBJECT.get(event.subject, LINK_EVENTS[0])
    link = contract.from_event(event)
    if "title" not in event.data:  # optional for other consumers of the contract, but a feed item shows it
        raise InvalidInput("title", "a link event for a feed needs a title")
    return FeedItem(event_id=event.event_id, event_type=event.event_type, author=validate_username(event.author),
                    url=link.url, title=link.title, occurred_ms=to_millis(event.occurred_at))


def on_link_event(service: NewsService, event: Event) -> int:
    return service.apply_link_event(feed_item_from_event(event))


def _follow_parties(contract: type[FollowEvent], event: Event) -> tuple[str, str, int]:
    follow = contract.from_event(event)
    return (validate_username(follow.follower, "follower"), validate_username(follow.followed, "followed"),
            to_millis(event.occurred_at))


def on_follow(service: NewsService, event: Event) -> None:
    service.apply_follow(*_follow_parties(Followed, event))


def on_unfollow(service: NewsService, event: Event) -> None:
    service.apply_unfollow(*_follow_parties(Unfollowed, event))


def subscriptions(service: NewsService, observe_fanout: Callable[[int, float], None]) -> list[Subscription]:
    """`observe_fanout(followers, seconds)` is told about every link event written to feeds."""

    def link_event(event: Event) -> None:
        started = time.perf_counter()
        followers = on_link_event(service, event)
        observe_fanout(followers, time.perf_counter() - started)

    def follow_event(event: Event) -> None:
        (on_follow if event.subject == Followed.subject else on_unfollow)(service, event)

    # Every write is idempotent by construction (same event, same state), which is what makes
    # redelivery and replay harmless without a separate dedup record.
    return [
        Subscription.to(*LINK_EVENTS, durable="news-link-events", handler=link_event),
        Subscription.to(Followed, Unfollowed, durable="news-follow-events", handler=follow_event),
    ]
