"""Feed storage adapters: Redis for real, in memory for fast unit tests of the use cases.
tests/news/test_service_contract.py holds both to the same behaviour.

Redis keys (all owned by the news service):
  news:feed:{username}       sorted set: feed items (deterministic JSON) scored by occurred-at ms
  news:followers:{author}    hash: follower -> "followed_ms:unfollowed_ms" (0 while following)
  news:authored:{author}     sorted set: the author's newest items, for followers whose follow event
                             arrives after the author's events
  news:generation            string: the generation marker, written when a rebuild made the store complete;
                             absent in a new or emptied store (see README.md, "Rebuilding")
  news:rebuild-lock          string with an expiry: the replica (or command) rebuilding the store
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from ..kit.core.errors import Unavailable
from .domain import TWIN_WINDOW_MS, FeedItem, FeedPosition, FollowEdge, FollowWindow
from .service import FeedStore

# Feeds written per script call. A script blocks Redis for its whole run; 1,000 feeds take about 5-10 ms
# of server time, so feed reads from other clients wait at most that long behind a big fan-out.
_FEEDS_PER_SCRIPT_CALL = 1000

GENERATION_KEY = "news:generation"
REBUILD_LOCK_KEY = "news:rebuild-lock"

# Add ARGV[2] at score ARGV[1] to every feed in KEYS and trim each to its newest ARGV[3] items, taking
# ARGV[4] (the rebuilt item of the same change, when not empty) out first. One command per chunk of feeds
# instead of a ZADD and a ZREMRANGEBYRANK per feed: encoding those commands in redis-py, not Redis, was most
# of a fan-out's time. ZADD of an existing member changes nothing, so redelivery and a retry after a partial
# run are harmless.
_ADD_TO_FEEDS = """
local score, member, replaced = ARGV[1], ARGV[2], ARGV[4]
local last_rank_to_drop = -(tonumber(ARGV[3]) + 1)
for _, feed in ipairs(KEYS) do
  if replaced ~= '' then
    redis.call('ZREM', feed, replaced)
  end
  redis.call('ZADD', feed, score, member)
  redis.call('ZREMRANGEBYRANK', feed, 0, last_rank_to_drop)
end
return #KEYS
"""

# Offer the rebuilt item ARGV[3] (scored ARGV[1]) to every sorted set in KEYS, trimming each to its newest
# ARGV[7] items, except to a set that already holds an item of the same type, author and URL (ARGV[4..6])
# scored from ARGV[1] to ARGV[2]: the item of the change's own event, stamped a little after the change, or
# this very item. Checked and written in one step per set, so an event consumed at the same time either
# finds the rebuilt item (and replaces it, _ADD_TO_FEEDS) or is found here. Returns the sets written.
_ADD_REBUILT = """
local written = 0
local last_rank_to_drop = -(tonumber(ARGV[7]) + 1)
for _, key in ipairs(KEYS) do
  local present = false
  for _, existing in ipairs(redis.call('ZRANGEBYSCORE', key, ARGV[1], ARGV[2])) do
    local ok, item = pcall(cjson.decode, existing)
    if ok and item['type'] == ARGV[4] and item['author'] == ARGV[5] and item['url'] == ARGV[6] then
      present = true
      break
    end
  end
  if not present then
    redis.call('ZADD', key, ARGV[1], ARGV[3])
    redis.call('ZREMRANGEBYRANK', key, 0, last_rank_to_drop)
    written = written + 1
  end
end
return written
"""

# The rebuild lock (KEYS[1]) is only ever changed by its holder (ARGV[1]).
_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Write the generation marker KEYS[2] = ARGV[2] if ARGV[1] still holds the lock KEYS[1].
_MARK_COMPLETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
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
        self._add_rebuilt = client.register_script(_ADD_REBUILT)
        self._renew_lock = client.register_script(_RENEW_LOCK)
        self._release_lock = client.register_script(_RELEASE_LOCK)
        self._mark_complete = client.register_script(_MARK_COMPLETE)

    def record_follow(self, follower: str, followed: str, at_ms: int) -> bool:
        with _redis_available():
            return bool(self._record_state(keys=[f"news:followers:{followed}"], args=[follower, "f", at_ms]))

    def record_unfollow(self, follower: str, followed: str, at_ms: int) -> bool:
        with _redis_available():
            return bool(self._record_state(keys=[f"news:followers:{followed}"], args=[follower, "u", at_ms]))

    def record_follows(self, edges: list[FollowEdge]) -> None:
        with _redis_available():
            pipeline = self._redis.pipeline(transaction=False)
            for edge in edges:
                self._record_state(keys=[f"news:followers:{edge.followed}"], args=[edge.follower, "f", edge.since_ms],
                                   client=pipeline)
            pipeline.execute()

    def follow_windows(self, author: str) -> list[FollowWindow]:
        with _redis_available():
            states = self._redis.hgetall(f"news:followers:{author}")
        return [_window(follower, state) for follower, state in states.items()]

    def add_to_feeds(self, usernames: list[str], item: FeedItem, max_length: int,
                     replacing: FeedItem | None = None) -> None:
        arguments = [item.occurred_ms, item.encode(), max_length, replacing.encode() if replacing else ""]
        with _redis_available():
            for start in range(0, len(usernames), _FEEDS_PER_SCRIPT_CALL):
                feeds = [f"news:feed:{username}" for username in usernames[start:start + _FEEDS_PER_SCRIPT_CALL]]
                self._add_to_feeds(keys=feeds, args=arguments)

    def remember_authored(self, item: FeedItem, keep: int, replacing: FeedItem | None = None) -> None:
        key = f"news:authored:{item.author}"
        with _redis_available():
            pipeline = self._redis.pipeline(transaction=False)
            if replacing is not None:
                pipeline.zrem(key, replacing.encode())
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

    # --- the store's completeness, and rebuilding it ---------------------------------------------
    def generation(self) -> str | None:
        with _redis_available():
            return self._redis.get(GENERATION_KEY)

    def acquire_rebuild_lock(self, owner: str, ttl_ms: int) -> bool:
        with _redis_available():
            return bool(self._redis.set(REBUILD_LOCK_KEY, owner, nx=True, px=ttl_ms))

    def renew_rebuild_lock(self, owner: str, ttl_ms: int) -> bool:
        with _redis_available():
            return bool(self._renew_lock(keys=[REBUILD_LOCK_KEY], args=[owner, ttl_ms]))

    def release_rebuild_lock(self, owner: str) -> None:
        with _redis_available():
            self._release_lock(keys=[REBUILD_LOCK_KEY], args=[owner])

    def mark_complete(self, generation: str, owner: str) -> bool:
        with _redis_available():
            return bool(self._mark_complete(keys=[REBUILD_LOCK_KEY, GENERATION_KEY], args=[owner, generation]))

    def add_rebuilt(self, author: str, items: list[tuple[FeedItem, list[str]]], max_length: int,
                    keep_authored: int) -> int:
        with _redis_available():
            pipeline = self._redis.pipeline(transaction=False)
            for item, readers in items:
                member, first, last = item.encode(), str(item.occurred_ms), str(item.occurred_ms + TWIN_WINDOW_MS)
                identity = [item.event_type, item.author, item.url]
                self._add_rebuilt(keys=[f"news:authored:{author}"],
                                  args=[first, last, member, *identity, keep_authored], client=pipeline)
                for start in range(0, len(readers), _FEEDS_PER_SCRIPT_CALL):
                    feeds = [f"news:feed:{reader}" for reader in readers[start:start + _FEEDS_PER_SCRIPT_CALL]]
                    self._add_rebuilt(keys=feeds, args=[first, last, member, *identity, max_length], client=pipeline)
            pipeline.execute()
        return len(items)


class InMemoryFeedStore(FeedStore):
    """Behaves like RedisFeedStore (same ordering: score, then member, both descending)."""

    def __init__(self) -> None:
        self.feeds: dict[str, dict[str, int]] = {}
        self.followers: dict[str, dict[str, tuple[int, int]]] = {}
        self.authored: dict[str, dict[str, int]] = {}
        self.marker: str | None = None
        self.rebuild_lock: tuple[str, float] | None = None  # owner, expires at (time.monotonic)
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

    def record_follows(self, edges: list[FollowEdge]) -> None:
        for edge in edges:
            self._record(edge.follower, edge.followed, "f", edge.since_ms)

    def follow_windows(self, author: str) -> list[FollowWindow]:
        return [FollowWindow(follower, followed, unfollowed or None)
                for follower, (followed, unfollowed) in self.followers.get(author, {}).items()]

    @staticmethod
    def _add(collection: dict[str, int], item: FeedItem, keep: int, replacing: FeedItem | None = None) -> None:
        if replacing is not None:
            collection.pop(replacing.encode(), None)
        collection[item.encode()] = item.occurred_ms
        for member in _newest_first(collection)[keep:]:
            del collection[member]

    def add_to_feeds(self, usernames: list[str], item: FeedItem, max_length: int,
                     replacing: FeedItem | None = None) -> None:
        with self._lock:
            for username in usernames:
                self._add(self.feeds.setdefault(username, {}), item, max_length, replacing)

    def remember_authored(self, item: FeedItem, keep: int, replacing: FeedItem | None = None) -> None:
        with self._lock:
            self._add(self.authored.setdefault(item.author, {}), item, keep, replacing)

    def authored_since(self, author: str, since_ms: int) -> list[FeedItem]:
        members = self.authored.get(author, {})
        return [FeedItem.decode(member) for member in reversed(_newest_first(members)) if members[member] >= since_ms]

    def read_feed(self, username: str, position: FeedPosition | None, count: int) -> list[FeedItem]:
        feed = self.feeds.get(username, {})
        ordered = [member for member in _newest_first(feed) if position is None or feed[member] <= position.score]
        start = position.skip if position else 0
        return [FeedItem.decode(member) for member in ordered[start:start + count]]

    def generation(self) -> str | None:
        return self.marker

    def _lock_owner(self) -> str | None:
        if self.rebuild_lock is None or self.rebuild_lock[1] <= time.monotonic():
            return None
        return self.rebuild_lock[0]

    def acquire_rebuild_lock(self, owner: str, ttl_ms: int) -> bool:
        with self._lock:
            if self._lock_owner() is not None:
                return False
            self.rebuild_lock = (owner, time.monotonic() + ttl_ms / 1000)
            return True

    def renew_rebuild_lock(self, owner: str, ttl_ms: int) -> bool:
        with self._lock:
            if self._lock_owner() != owner:
                return False
            self.rebuild_lock = (owner, time.monotonic() + ttl_ms / 1000)
            return True

    def release_rebuild_lock(self, owner: str) -> None:
        with self._lock:
            if self._lock_owner() == owner:
                self.rebuild_lock = None

    def mark_complete(self, generation: str, owner: str) -> bool:
        with self._lock:
            if self._lock_owner() != owner:
                return False
            self.marker = generation
            return True

    def add_rebuilt(self, author: str, items: list[tuple[FeedItem, list[str]]], max_length: int,
                    keep_authored: int) -> int:
        with self._lock:
            for item, readers in items:
                targets = [(self.authored.setdefault(author, {}), keep_authored)]
                targets += [(self.feeds.setdefault(reader, {}), max_length) for reader in readers]
                for collection, keep in targets:
                    if not any(_same_change(member, score, item) for member, score in collection.items()):
                        self._add(collection, item, keep)
        return len(items)


def _same_change(member: str, score: int, rebuilt: FeedItem) -> bool:
    """Whether a stored item stands for the same change as `rebuilt` (the _ADD_REBUILT rule)."""
    if not rebuilt.occurred_ms <= score <= rebuilt.occurred_ms + TWIN_WINDOW_MS:
        return False
    stored = FeedItem.decode(member)
    return (stored.event_type, stored.author, stored.url) == (rebuilt.event_type, rebuilt.author, rebuilt.url)


def _newest_first(collection: dict[str, Any]) -> list[str]:
    return sorted(collection, key=lambda member: (collection[member], member), reverse=True)
