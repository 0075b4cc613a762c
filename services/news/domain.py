"""The news domain: feed items and who sees them. Plain Python, no I/O.

A follower sees an author's events from the moment they follow and stops seeing new ones once they
unfollow. Events can arrive late or out of order, so who sees an event is decided by the times the
events carry (occurred_at), never by arrival order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..kit.core.errors import InvalidInput

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100


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
