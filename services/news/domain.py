"""The news domain: feed items and who sees them. Plain Python, no I/O.

A follower sees an author's events from the moment they follow and stops seeing new ones once they
unfollow. Events can arrive late or out of order, so who sees an event is decided by the times the
events carry (occurred_at), never by arrival order.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..kit.core.errors import InvalidInput

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100

# The event types a feed item can have (contracts.events.LINK_EVENTS), by what a rebuild needs of them.
LINK_ADDED, LINK_UPDATED = "link_added", "link_updated"

# How much later than the link's own change time (its created_at or updated_at) the event reporting it can be
# stamped: the link service takes the change time first, then stamps the event in the same transaction (waits for
# a pool connection and the user's lock included, bounded by the pool's 5 s and the statement timeout). A rebuilt
# item stands for the event of the same change, so a feed that holds an item of the same type, author and URL
# within this long after the change already has it.
TWIN_WINDOW_MS = 60_000

# Namespace of rebuilt items' ids (uuid5); any fixed UUID would do, it must never change.
_REBUILT_ITEM_NAMESPACE = uuid.UUID("0b6f3c5e-8f7a-4c1e-9d2a-5e4b7a9c1d03")


def to_millis(moment: datetime) -> int:
    return int(moment.astimezone(timezone.utc).timestamp() * 1000)


def from_millis(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc)


@dataclass(frozen=True)
class FeedItem:
    event_id: str
    event_type: str  # of a link event (contracts.events.LINK_EVENTS)
    author: str
    url: str
    title: str
    occurred_ms: int

    def encode(self) -> str:
        """The stored form. Deterministic, so writing the same item twice stores it once."""
        return json.dumps(
            {"id": self.event_id, "type": self.event_type, "author": self.author, "url": self.url,
             "title": self.title, "at": self.occurred_ms},
            sort_keys=True, separators=(",", ":"), ensure_ascii=False,
        )

    @classmethod
    def decode(cls, stored: str) -> FeedItem:
        data = json.loads(stored)
        return cls(event_id=data["id"], event_type=data["type"], author=data["author"], url=data["url"],
                   title=data["title"], occurred_ms=int(data["at"]))


def rebuilt_item(event_type: str, author: str, url: str, title: str, changed_ms: int) -> FeedItem:
    """The feed item a rebuild writes for a link's change (its creation or its last update), read from the link
    service: stamped with the change's own time, with an id derived from the change. The same change always gives
    the same item, so rebuilding twice stores it once, and the consumer of that change's event can recognise it
    (and put the event's own item in its place)."""
    item_id = uuid.uuid5(_REBUILT_ITEM_NAMESPACE, json.dumps([event_type, author, url, changed_ms]))
    return FeedItem(event_id=str(item_id), event_type=event_type, author=author, url=url, title=title,
                    occurred_ms=changed_ms)


@dataclass(frozen=True)
class LinkState:
    """A link as its owner's service has it now: what a rebuild turns into one feed item."""

    url: str
    title: str
    created_at: datetime
    updated_at: datetime

    def feed_item(self, author: str) -> FeedItem:
        """The item of the link's last change: its creation, or its last update if it was ever updated (the
        title it was created with is gone then)."""
        if self.updated_at != self.created_at:
            return rebuilt_item(LINK_UPDATED, author, self.url, self.title, to_millis(self.updated_at))
        return rebuilt_item(LINK_ADDED, author, self.url, self.title, to_millis(self.created_at))


@dataclass(frozen=True)
class FollowEdge:
    """`follower` follows `followed` since `since_ms`, as the social-graph service has it now."""

    follower: str
    followed: str
    since_ms: int


@dataclass(frozen=True)
class FollowWindow:
    """When `follower` followed an author, and when they stopped (None while they still follow)."""

    follower: str
    followed_ms: int
    unfollowed_ms: int | None = None

    def sees(self, occurred_ms: int) -> bool:
        return self.followed_ms <= occurred_ms and (self.unfollowed_ms is None or occurred_ms < self.unfollowed_ms)


@dataclass(frozen=True)
class FeedPosition:
    """Where a page ends: items at or below `score` (ms), after skipping `skip` items at that score."""

    score: int
    skip: int

    @classmethod
    def from_cursor(cls, value: Any) -> FeedPosition | None:
        if value is None:
            return None
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(part, int) and not isinstance(part, bool) and part >= 0 for part in value)):
            raise InvalidInput("start_token", "is not a valid page token")
        return cls(score=value[0], skip=value[1])

    def to_cursor(self) -> list[int]:
        return [self.score, self.skip]


def next_position(page: list[FeedItem], previous: FeedPosition | None) -> FeedPosition:
    """The position after `page`: its last score, skipping every item at that score seen so far."""
    last = page[-1].occurred_ms
    at_last = sum(1 for item in page if item.occurred_ms == last)
    if previous is not None and previous.score == last:
        at_last += previous.skip  # the whole page sat at one score: keep counting
    return FeedPosition(score=last, skip=at_last)


def validate_page_size(limit: int) -> int:
    if limit == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput("limit", f"must be between 1 and {MAX_PAGE_SIZE} (0 for the default)")
    return limit
