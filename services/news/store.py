"""Feed storage adapters: Redis for real, in memory for fast unit tests of the use cases.
tests/news/test_service_contract.py holds both to the same behaviour.

Redis keys (all owned by the news service):
  news:feed:{username}       sorted set: feed items (deterministic JSON) scored by occurred-at ms
  news:followers:{author}    hash: follower -> "followed_ms:unfollowed_ms" (0 while following)
  news:authored:{author}     sorted set: the author's newest items, for followers whose follow event
                             arrives after the author's events
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from ..kit.core.errors import Unavailable
from .domain import FeedItem, FeedPosition, FollowWindow
from .service import FeedStore

# Feeds written per script call. A script blocks Redis for its whole run; 1,000 feeds take about 5-10 ms
# of server time, so feed reads from other clients wait at most that long behind a big fan-out.
_FEEDS_PER_SCRIPT_CALL = 1000

# Add ARGV[2] at score ARGV[1] to every feed in KEYS and trim each to its newest ARGV[3] items. One
# command per chunk of feeds instead of a ZADD and a ZREMRANGEBYRANK per feed: encoding those commands
# in redis-py, not Redis, was most of a fan-out's time. ZADD of an existing member changes nothing,
# so redelivery and a retry after a partial run are harmless.
_ADD_TO_FEEDS = """
local score, member = ARGV[1], ARGV[2]
local last_rank_to_drop = -(tonumber(ARGV[3]) + 1)
for _, feed in ipairs(KEYS) do
  redis.call('ZADD', feed, score, member)
  redis.call('ZREMRANGEBYRANK', feed, 0, last_rank_to_drop)
end
return #KEYS
"""

# Apply a follow ("f") or unfollow ("u") at ARGV[3] ms unless the pair already saw something at the
# same time or later (duplicates and stale, out-of-order events change nothing). Returns 1 if applied.
_RECORD_FOLLOW_STATE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local followed, unfollowed = 0, 0
if current then
  local separator = string.find(current, ':', 1, true)
  followed = tonumber(string.sub(current, 1, separator - 1))
  unfollowed = tonumber(string.sub(current, separator + 1))
end
local at = tonumber(ARGV[3])
if current and at <= math.max(followed, unfollowed) then
  return 0
end
if ARGV[2] == 'f' then
  followed, unfollowed = at, 0
elseif current then
  unfollowed = at
else
  followed, unfollowed = at, at  -- an unfollow seen before its follow: an empty window
end
redis.call('HSET', KEYS[1], ARGV[1], followed .. ':' .. unfollowed)
return 1
"""


@contextmanager
def _redis_available() -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unavailable("feed store (Redis) unavailable") from exc


def _window(follower: str, state: str) -> FollowWindow:
    # Runs once per follower of an author on every fan-out: partition, not a generator over split.
    followed, _, unfollowed = state.partition(":")
    return FollowWindow(follower=follower, followed_ms=int(followed), unfollowed_ms=int(unfollowed) or None)


class RedisFeedStore(FeedStore):
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._record_state = client.register_script(_RECORD_FOLLOW_STATE)
        self._add_to_feeds = client.register_script(_ADD_TO_FEEDS)

    def record_follow(self, follower: str, followed: str, at_ms: int) -> bool:
        with _redis_available():
            return bool(self._record_state(keys=[f"news:followers:{followed}"], args=[follower, "f", at_ms]))

    def record_unfollow(self, follower: str, followed: str, at_ms: int) -> bool:
        with _redis_available():
            return bool(self._record_state(keys=[f"news:followers:{followed}"], args=[follower, "u", at_ms]))

    def follow_windows(self, author: str) -> list[FollowWindow]:
        with _redis_available():
            states = self._redis.hgetall(f"news:followers:{author}")
        return [_window(follower, state) for follower, state in states.items()]

    def add_to_feeds(self, usernames: list[str], item: FeedItem, max_length: int) -> None:
        arguments = [item.occurred_ms, item.encode(), max_length]
        with _redis_available():
            for start in range(0, len(usernames), _FEEDS_PER_SCRIPT_CALL):
                feeds = [f"news:feed:{username}" for username in usernames[start:start + _FEEDS_PER_SCRIPT_CALL]]
                self._add_to_feeds(keys=feeds, args=arguments)

    def remember_authored(self, item: FeedItem, keep: int) -> None:
        key = f"news:authored:{item.author}"
        with _redis_available():
            pipeline = self._redis.pipeline(transaction=False)
            pipeline.zadd(key, {item.encode(): item.occurred_ms})
            pipeline.zremrangebyrank(key, 0, -(keep + 1))
            pipeline.execute()

    def authored_since(self, author: str, since_ms: int) -> list[FeedItem]:
        with _redis_available():
            members = self._redis.zrangebyscore(f"news:authored:{author}", since_ms, "+inf")
        return [FeedItem.decode(member) for member in members]

    def read_feed(self, username: str, position: FeedPosition | None, count: int) -> list[FeedItem]:
        with _redis_available():
            members = self._redis.zrevrangebyscore(
                f"news:feed:{username}", position.score if position else "+inf", "-inf",
                start=position.skip if position else 0, num=count,
            )
        return [FeedItem.decode(member) for member in members]


class InMemoryFeedStore(FeedStore):
    """Behaves like RedisFeedStore (same ordering: score, then member, both descending)."""

    def __init__(self) -> None:
        self.feeds: dict[str, dict[str, int]] = {}
        self.followers: dict[str, dict[str, tuple[int, int]]] = {}
        self.authored: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def _record(self, follower: str, followed: str, kind: str, at_ms: int) -> bool:
        with self._lock:
            pairs = self.followers.setdefault(followed, {})
            current = pairs.get(follower)
            if current is not None and at_ms <= max(current):
                return False
            if kind == "f":
                pairs[follower] = (at_ms, 0)
            else:
                pairs[follower] = (current[0], at_ms) if current else (at_ms, at_ms)
            return True

    def record_follow(self, follower: str, followed: str, at_ms: int) -> bool:
        return self._record(follower, followed, "f", at_ms)

    def record_unfollow(self, follower: str, followed: str, at_ms: int) -> bool:
        return self._record(follower, followed, "u", at_ms)

    def follow_windows(self, author: str) -> list[FollowWindow]:
        return [FollowWindow(follower, followed, unfollowed or None)
                for follower, (followed, unfollowed) in self.followers.get(author, {}).items()]

    @staticmethod
    def _add(collection: dict[str, int], item: FeedItem, keep: int) -> None:
        collection[item.encode()] = item.occurred_ms
        for member in _newest_first(collection)[keep:]:
            del collection[member]

    def add_to_feeds(self, usernames: list[str], item: FeedItem, max_length: int) -> None:
        with self._lock:
            for username in usernames:
                self._add(self.feeds.setdefault(username, {}), item, max_length)

    def remember_authored(self, item: FeedItem, keep: int) -> None:
        with self._lock:
            self._add(self.authored.setdefault(item.author, {}), item, keep)

    def authored_since(self, author: str, since_ms: int) -> list[FeedItem]:
        members = self.authored.get(author, {})
        return [FeedItem.decode(member) for member in reversed(_newest_first(members)) if members[member] >= since_ms]

    def read_feed(self, username: str, position: FeedPosition | None, count: int) -> list[FeedItem]:
        feed = self.feeds.get(username, {})
        ordered = [member for member in _newest_first(feed) if position is None or feed[member] <= position.score]
        start = position.skip if position else 0
        return [FeedItem.decode(member) for member in ordered[start:start + count]]


def _newest_first(collection: dict[str, Any]) -> list[str]:
    return sorted(collection, key=lambda member: (collection[member], member), reverse=True)
