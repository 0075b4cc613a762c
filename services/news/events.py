"""The news service's event entry point: link events fan out to feeds, follow events keep the
follower projection. Payloads are decoded and checked here; the use cases get domain values."""
from __future__ import annotations

import time
from collections.abc import Callable

from ..contracts.events import LINK_EVENTS, Event, Followed, FollowEvent, LinkAdded, LinkEvent, LinkUpdated, Unfollowed
from ..kit.core.errors import InvalidInput
from ..kit.core.validation import validate_username
from ..kit.messaging.consumer import Subscription
from .domain import FeedItem, rebuilt_item, to_millis
from .service import NewsService

_LINK_EVENTS_BY_SUBJECT: dict[str, type[LinkEvent]] = {contract.subject: contract for contract in LINK_EVENTS}


def _link_of(event: Event) -> LinkEvent:
    return _LINK_EVENTS_BY_SUBJECT.get(event.subject, LINK_EVENTS[0]).from_event(event)


def feed_item_from_event(event: Event) -> FeedItem:
    """InvalidInput naming the field for an event that is not a usable link event."""
    link = _link_of(event)
    if "title" not in event.data:  # optional for other consumers of the contract, but a feed item shows it
        raise InvalidInput("title", "a link event for a feed needs a title")
    return FeedItem(event_id=event.event_id, event_type=event.event_type, author=validate_username(event.author),
                    url=link.url, title=link.title, occurred_ms=to_millis(event.occurred_at))


def rebuilt_twin(event: Event, item: FeedItem) -> FeedItem | None:
    """The item a rebuild would have written for the change this event reports (domain.rebuilt_item): a link's
    creation (link_created_at) or one of its updates (link_updated_at). None for a deletion, which a rebuild
    never writes, and for an event without the link's times."""
    link = _link_of(event)
    changed_at = {LinkAdded.event_type: link.link_created_at,
                  LinkUpdated.event_type: link.link_updated_at}.get(event.event_type)
    if changed_at is None:
        return None
    return rebuilt_item(item.event_type, item.author, item.url, item.title, to_millis(changed_at))


def on_link_event(service: NewsService, event: Event) -> int:
    item = feed_item_from_event(event)
    return service.apply_link_event(item, replacing=rebuilt_twin(event, item))


def _follow_parties(contract: type[FollowEvent], event: Event) -> tuple[str, str, int]:
    follow = contract.from_event(event)
    return (validate_username(follow.follower, "follower"), validate_username(follow.followed, "followed"),
            to_millis(event.occurred_at))


def on_follow(service: NewsService, event: Event) -> None:
    service.apply_follow(*_follow_parties(Followed, event))


def on_unfollow(service: NewsService, event: Event) -> None:
    service.apply_unfollow(*_follow_parties(Unfollowed, event))


def subscriptions(service: NewsService, observe_fanout: Callable[[int, float], None],
                  on_handled: Callable[[], None] = lambda: None) -> list[Subscription]:
    """`observe_fanout(followers, seconds)` is told about every link event written to feeds; `on_handled()` is
    called after every event (the store guard looks at the generation marker now and then)."""

    def link_event(event: Event) -> None:
        started = time.perf_counter()
        followers = on_link_event(service, event)
        observe_fanout(followers, time.perf_counter() - started)
        on_handled()

    def follow_event(event: Event) -> None:
        (on_follow if event.subject == Followed.subject else on_unfollow)(service, event)
        on_handled()

    # Every write is idempotent by construction (same event, same state), which is what makes
    # redelivery and replay harmless without a separate dedup record.
    return [
        Subscription.to(*LINK_EVENTS, durable="news-link-events", handler=link_event),
        Subscription.to(Followed, Unfollowed, durable="news-follow-events", handler=follow_event),
    ]
