"""Use cases of the news service: keep the follower projection, fan link events out to followers'
feeds (fan-out on write), read a feed page by page, and rebuild the projection and the feeds from the
services that own them (social-graph and link) when the store has lost them."""
from __future__ import annotations

import abc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..kit.core.pages import PageTokens
from ..kit.core.validation import validate_username
from .domain import (
    FeedItem,
    FeedPosition,
    FollowEdge,
    FollowWindow,
    LinkState,
    next_position,
    validate_page_size,
)


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
    def record_follows(self, edges: list[FollowEdge]) -> None:
        """record_follow for each edge, from its `since_ms` (a rebuild's page of edges)."""

    @abc.abstractmethod
    def follow_windows(self, author: str) -> list[FollowWindow]:
        """Everyone who follows or followed `author`, with when."""

    @abc.abstractmethod
    def add_to_feeds(self, usernames: list[str], item: FeedItem, max_length: int,
                     replacing: FeedItem | None = None) -> None:
        """Put `item` in each user's feed, trimming each feed to its newest `max_length` items; `replacing`
        (the rebuilt item of the same change, if a rebuild wrote one) is taken out of those feeds."""

    @abc.abstractmethod
    def remember_authored(self, item: FeedItem, keep: int, replacing: FeedItem | None = None) -> None:
        """Keep the author's newest `keep` items, so a new follower can be given events that were
        processed before their follow event arrived; `replacing` as for add_to_feeds."""

    @abc.abstractmethod
    def authored_since(self, author: str, since_ms: int) -> list[FeedItem]: ...

    @abc.abstractmethod
    def read_feed(self, username: str, position: FeedPosition | None, count: int) -> list[FeedItem]:
        """Newest first: items with score <= position.score after skipping position.skip of them."""

    # --- the store's completeness, and rebuilding it ---------------------------------------------
    @abc.abstractmethod
    def generation(self) -> str | None:
        """The generation marker, written when the store was last known complete (a rebuild finished); None
        in a new or emptied store."""

    @abc.abstractmethod
    def acquire_rebuild_lock(self, owner: str, ttl_ms: int) -> bool:
        """Take the one rebuild lock of the store for `ttl_ms` (so replicas do not rebuild at once); False if
        someone else holds it."""

    @abc.abstractmethod
    def renew_rebuild_lock(self, owner: str, ttl_ms: int) -> bool:
        """Extend `owner`'s lock; False if it is not theirs any more (expired, or the store was emptied)."""

    @abc.abstractmethod
    def release_rebuild_lock(self, owner: str) -> None:
        """Give the lock up, if it is still `owner`'s."""

    @abc.abstractmethod
    def mark_complete(self, generation: str, owner: str) -> bool:
        """Write the generation marker if `owner` still holds the rebuild lock (a store emptied during the
        rebuild lost the lock with everything else); True when written."""

    @abc.abstractmethod
    def add_rebuilt(self, author: str, items: list[tuple[FeedItem, list[str]]], max_length: int,
                    keep_authored: int) -> int:
        """Put each rebuilt item of `author` in the author's history (newest `keep_authored` kept) and in the
        feeds of the users listed with it (newest `max_length` kept), except in a feed or history that already
        holds an item of the same type, author and URL stamped within TWIN_WINDOW_MS after it: that is the item
        of the change's own event (or this item, from an earlier rebuild). Returns the items written."""


class FollowSource(abc.ABC):
    """The service that owns who follows whom (social-graph)."""

    @abc.abstractmethod
    def pages(self) -> Iterator[list[FollowEdge]]:
        """Every edge, a page at a time. Raises kit.errors.Unavailable when the owner cannot answer."""


class LinkSource(abc.ABC):
    """The service that owns the links (link)."""

    @abc.abstractmethod
    def recently_changed(self, author: str, count: int) -> list[LinkState]:
        """The author's `count` most recently changed links (all of them if fewer), the last change first.
        Raises kit.errors.Unavailable when the owner cannot answer."""


class NewsService:
    """`page_tokens` makes and reads the feed's page tokens, bound to their reader; the service's wiring gives it
    tokens signed with its PAGE_TOKEN_SECRET (app.py), unsigned ones are for tests of the use cases alone."""

    def __init__(self, store: FeedStore, *, feed_max_length: int, authored_history: int = 200,
                 page_tokens: PageTokens | None = None) -> None:
        self._store = store
        self._max_length = feed_max_length
        self._history = authored_history
        self._tokens = page_tokens or PageTokens()

    # --- events -----------------------------------------------------------------------------
    def apply_link_event(self, item: FeedItem, *, replacing: FeedItem | None = None) -> int:
        """Fan a link event out to the feeds of everyone following its author at the time; returns
        how many feeds it was written to. `replacing`: the item a rebuild would have written for the same
        change (domain.rebuilt_item), which the event's own item takes the place of."""
        self._store.remember_authored(item, self._history, replacing)
        readers = [window.follower for window in self._store.follow_windows(item.author)
                   if window.sees(item.occurred_ms)]
        self._store.add_to_feeds(readers, item, self._max_length, replacing)
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
        # The position is checked as untrusted input (64-bit integers: Redis refuses larger offsets) before the store.
        position = FeedPosition.from_cursor(self._tokens.decode(start_token or None, ["news", username]))
        items = self._store.read_feed(username, position, count + 1)
        page = items[:count]
        if len(items) <= count:
            return page, ""
        return page, self._tokens.encode(next_position(page, position).to_cursor(), ["news", username])


class RebuildAborted(Exception):
    """A rebuild stopped before it was complete (the process is stopping, or it lost the lock); the marker was
    not written, so the next check starts it again."""


@dataclass(frozen=True)
class RebuildResult:
    generation: str
    follows: int  # edges read from the follow source
    authors: int  # followed users whose links were read
    items: int  # rebuilt items offered to the feeds (each written where its change was not there yet)


class StoreRebuild:
    """Rebuild the follower projection and the feeds from their owners, merging with what the store has.

    1. Every edge of the follow source is recorded as a follow from the edge's creation time: the projection's
       rules ignore it where the store knows something newer (an unfollow or follow event consumed meanwhile).
    2. For each followed user, their latest `feed_max_length` link changes are turned into one item per link
       (domain.LinkState.feed_item) and fanned out as an event would be, by the follow windows, except where the
       change's own event item is already there (FeedStore.add_rebuilt). A feed keeps its newest items, so each
       follower ends with the newest `feed_max_length` items of the people they follow.
    3. The generation marker is written, if the caller still holds the rebuild lock.

    Consumers go on meanwhile. Every step is idempotent and merges with their writes: an event item arriving
    after its rebuilt twin takes the twin's place, and a rebuilt item arriving after the event item is not
    written. What the owners no longer have (a deleted link, a removed edge, updates before a link's last one) is
    not rebuilt: the owners' present state is the source of truth.
    """

    def __init__(self, store: FeedStore, follows: FollowSource, links: LinkSource, *, feed_max_length: int,
                 authored_history: int = 200) -> None:
        self._store = store
        self._follows = follows
        self._links = links
        self._max_length = feed_max_length
        self._history = authored_history

    def run(self, owner: str, keep_going: Callable[[], None]) -> RebuildResult:
        """Rebuild while `owner` holds the rebuild lock. `keep_going()` is called between steps and raises
        (RebuildAborted) to stop; so does losing the lock before the marker is written."""
        authors: set[str] = set()
        follows = items = 0
        for page in self._follows.pages():
            keep_going()
            self._store.record_follows(page)
            authors.update(edge.followed for edge in page)
            follows += len(page)
        for author in sorted(authors):
            keep_going()
            windows = self._store.follow_windows(author)
            batch = []
            for link in self._links.recently_changed(author, self._max_length):
                item = link.feed_item(author)
                batch.append((item, [window.follower for window in windows if window.sees(item.occurred_ms)]))
            self._store.add_rebuilt(author, batch, self._max_length, self._history)
            items += len(batch)
        keep_going()
        generation = str(uuid.uuid4())
        if not self._store.mark_complete(generation, owner):
            raise RebuildAborted("lost the rebuild lock before the store was complete")
        return RebuildResult(generation=generation, follows=follows, authors=len(authors), items=items)
