"""Use cases of the news service: keep the follower projection, fan link events out to followers'
feeds (fan-out on write), and read a feed page by page."""
from __future__ import annotations

import abc

from ..kit.core.pages import decode_cursor, encode_cursor
from ..kit.core.validation import validate_username
from .domain import FeedItem, FeedPosition, FollowWindow, next_position, validate_page_size


class FeedStore(abc.ABC):
    """Feeds and the follower projection. Implementations: RedisFeedStore and InMemoryFeedStore, held
    to the same behaviour by tests/news/test_service_contract.py. Every write is idempotent: applying
    the same event twice leaves the same state."""

    @abc.abstractmethod
    def record_follow(self, follower: str, followed: str, at_ms: int) -> bool:
        """Follower follows from `at_ms` on, unless a later follow/unfollow of the pair is recorded.
        True when applied."""

    @abc.abstractmethod
    def record_unfollow(self, follower: str, followed: str, at_ms: int) -> bool:
        """Follower stops following at `at_ms`, unless a later follow/unfollow is recorded."""

    @abc.abstractmethod
    def follow_windows(self, author: str) -> list[FollowWindow]:
        """Everyone who follows or followed `author`, with when."""

    @abc.abstractmethod
    def add_to_feeds(self, usernames: list[str], item: FeedItem, max_length: int) -> None:
        """Put `item` in each user's feed, trimming each feed to its newest `max_length` items."""

    @abc.abstractmethod
    def remember_authored(self, item: FeedItem, keep: int) -> None:
        """Keep the author's newest `keep` items, so a new follower can be given events that were
        processed before their follow event arrived."""

    @abc.abstractmethod
    def authored_since(self, author: str, since_ms: int) -> list[FeedItem]: ...

    @abc.abstractmethod
    def read_feed(self, username: str, position: FeedPosition | None, count: int) -> list[FeedItem]:
        """Newest first: items with score <= position.score after skipping position.skip of them."""


class NewsService:
    def __init__(self, store: FeedStore, *, feed_max_length: int, authored_history: int = 200) -> None:
        self._store = store
        self._max_length = feed_max_length
        self._history = authored_history

    # --- events -----------------------------------------------------------------------------
    def apply_link_event(self, item: FeedItem) -> int:
        """Fan a link event out to the feeds of everyone following its author at the time; returns
        how many feeds it was written to."""
        self._store.remember_authored(item, self._history)
        readers = [window.follower for window in self._store.follow_windows(item.author)
                   if window.sees(item.occurred_ms)]
        self._store.add_to_feeds(readers, item, self._max_length)
        return len(readers)

    def apply_follow(self, follower: str, followed: str, at_ms: int) -> None:
        """`follower` follows `followed` from `at_ms` (the follow event's time) on."""
        if self._store.record_follow(follower, followed, at_ms):
            # Events of the author processed before this follow event arrived, but after the follow.
            backlog = self._store.authored_since(followed, at_ms)
            for item in backlog:
                self._store.add_to_feeds([follower], item, self._max_length)

    def apply_unfollow(self, follower: str, followed: str, at_ms: int) -> None:
        self._store.record_unfollow(follower, followed, at_ms)

    # --- queries ------------------------------------------------------------------------------
    def get_news(self, username: str, start_token: str, limit: int) -> tuple[list[FeedItem], str]:
        validate_username(username)
        count = validate_page_size(limit)
        position = FeedPosition.from_cursor(decode_cursor(start_token or None, ["news", username]))
        items = self._store.read_feed(username, position, count + 1)
        page = items[:count]
        if len(items) <= count:
            return page, ""
        return page, encode_cursor(next_position(page, position).to_cursor(), ["news", username])
