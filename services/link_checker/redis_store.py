"""Redis adapters: per-host politeness shared by every replica, the result cache with its per-URL claim,
and the queue of pending checks (inconclusive ones waiting for their next attempt). All keys start with the
namespace (`link-checker:` by default); all expire, but for the queue's index of due times, whose entries are
removed with the checks they index."""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..kit.core.clock import format_timestamp, parse_timestamp
from .domain import CheckRequest, Inconclusive, Outcome, Verdict
from .service import CachedOutcome, HostBusy, HostThrottle, PendingCheck, ResultCache, RetryQueue

# Reserve the host's next free request slot, on Redis's clock so every replica agrees: returns the
# milliseconds to wait for it, or -1 (nothing reserved) when that is longer than the caller may wait.
_RESERVE_SLOT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local free_at = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now_ms, free_at)
local wait = slot - now_ms
if wait > tonumber(ARGV[2]) then
  return -1
end
local interval = tonumber(ARGV[1])
redis.call('SET', KEYS[1], slot + interval, 'PX', wait + interval)
return wait
"""

_RELEASE_IF_OWNED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisHostThrottle(HostThrottle):
    """At most one request per `interval_s` to one host, over all replicas: each request reserves
    the next free slot (a queue in time) and sleeps until it."""

    def __init__(self, redis: Any, *, interval_s: float, max_wait_s: float, namespace: str = "link-checker",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._redis = redis
        self._interval_ms = int(round(interval_s * 1000))
        self._max_wait_ms = int(round(max_wait_s * 1000))
        self._namespace = namespace
        self._sleep = sleep
        self._reserve = redis.register_script(_RESERVE_SLOT)

    def wait_turn(self, host: str) -> float:
        if self._interval_ms <= 0:
            return 0.0
        wait_ms = int(self._reserve(keys=[f"{self._namespace}:host:{host}"],
                                    args=[self._interval_ms, self._max_wait_ms]))
        if wait_ms < 0:
            raise HostBusy(f"{host}: the next polite turn is more than {self._max_wait_ms / 1000:g} s away")
        if wait_ms:
            self._sleep(wait_ms / 1000)
        return wait_ms / 1000


class RedisResultCache(ResultCache):
    def __init__(self, redis: Any, *, namespace: str = "link-checker") -> None:
        self._redis = redis
        self._namespace = namespace
        self._release = redis.register_script(_RELEASE_IF_OWNED)

    def _key(self, kind: str, url_key: str) -> str:
        # Hashed: keys stay short whatever the URL, and hold no user data.
        return f"{self._namespace}:{kind}:{hashlib.sha256(url_key.encode()).hexdigest()}"

    def get(self, url_key: str) -> CachedOutcome | None:
        raw = self._redis.get(self._key("result", url_key))
        if raw is None:
            return None
        try:
            stored = json.loads(raw)
            outcome: Outcome
            if stored.get("status") == "inconclusive":
                outcome = Inconclusive(stored["reason"], stored["failure"], stored["http_status"],
                                       stored.get("retry_after_s"))
            else:
                outcome = Verdict(status=stored["status"], http_status=stored["http_status"], reason=stored["reason"],
                                  refused=bool(stored.get("refused")), failure=stored.get("failure"))
            return CachedOutcome(outcome, parse_timestamp(stored["checked_at"]))
        except (ValueError, KeyError, TypeError):
            return None  # unreadable (an older format?): check again

    def put(self, url_key: str, cached: CachedOutcome, ttl_s: float) -> None:
        outcome = cached.outcome
        stored: dict[str, Any]
        if isinstance(outcome, Inconclusive):
            stored = {"status": "inconclusive", "reason": outcome.reason, "failure": outcome.failure,
                      "http_status": outcome.http_status, "retry_after_s": outcome.retry_after_s}
        else:
            stored = {"status": outcome.status, "http_status": outcome.http_status, "reason": outcome.reason,
                      "refused": outcome.refused, "failure": outcome.failure}
        stored["checked_at"] = format_timestamp(cached.checked_at)
        self._redis.set(self._key("result", url_key), json.dumps(stored), px=max(1, int(ttl_s * 1000)))

    def claim(self, url_key: str, lease_s: float) -> str | None:
        token = uuid.uuid4().hex
        claimed = self._redis.set(self._key("checking", url_key), token, nx=True, px=max(1, int(lease_s * 1000)))
        return token if claimed else None

    def release(self, url_key: str, token: str) -> None:
        self._release(keys=[self._key("checking", url_key)], args=[token])


# Whether the pending check in KEYS[2] is the one for link event ARGV[n] ('' matches anything).
_IS_PENDING_FOR = """
local function pending_for(key, source_event_id)
  if source_event_id == '' then
    return true
  end
  local body = redis.call('GET', key)
  return body ~= false and cjson.decode(body)['source_event_id'] == source_event_id
end
"""

# Schedule a pending check: its body (expiring) and its due time in the index, on Redis's clock.
_SCHEDULE = _IS_PENDING_FOR + """
if not pending_for(KEYS[2], ARGV[5]) then
  return 0
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[3]), ARGV[1])
return 1
"""

_DISCARD = _IS_PENDING_FOR + """
if not pending_for(KEYS[2], ARGV[2]) then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

# Take the first due check and lease it (its due time moves to the end of the lease); a check whose body has
# expired is dropped from the index. Returns {key, body} or nil.
_TAKE_DUE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for _ = 1, 20 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, 1)
  if #due == 0 then
    return nil
  end
  local body = redis.call('GET', ARGV[1] .. due[1])
  if body then
    redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), due[1])
    return {due[1], body}
  end
  redis.call('ZREM', KEYS[1], due[1])
end
return nil
"""

# Hand a taken check back, due in ARGV[2] ms, if it is still pending.
_RELEASE_PENDING = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
end
return 1
"""


class RedisRetryQueue(RetryQueue):
    """Pending checks: `<namespace>:retry:<key>` holds one (JSON, expiring), and the sorted set
    `<namespace>:retries` indexes their due times (milliseconds on Redis's clock, so every replica agrees).
    Keys are hashes of the owner and the link: no URL is stored in a key."""

    def __init__(self, redis: Any, *, namespace: str = "link-checker") -> None:
        self._redis = redis
        self._index = f"{namespace}:retries"
        self._prefix = f"{namespace}:retry:"
        self._schedule = redis.register_script(_SCHEDULE)
        self._take_due = redis.register_script(_TAKE_DUE)
        self._release = redis.register_script(_RELEASE_PENDING)
        self._discard = redis.register_script(_DISCARD)

    def schedule(self, key: str, pending: PendingCheck, delay_s: float, keep_s: float, *,
                 if_pending_for: str | None = None) -> bool:
        body = json.dumps({
            "username": pending.request.username, "url": pending.request.url,
            "link_created_at": pending.request.link_created_at, "source_event_id": pending.source_event_id,
            "request_id": pending.request_id, "attempts": pending.attempts,
            "first_attempt_at": format_timestamp(pending.first_attempt_at), "last_reason": pending.last_reason,
            "last_failure": pending.last_failure,
        })
        return bool(self._schedule(keys=[self._index, self._prefix + key],
                                   args=[key, body, max(0, int(delay_s * 1000)), max(1, int(keep_s * 1000)),
                                         if_pending_for or ""]))

    def take_due(self, lease_s: float) -> tuple[str, PendingCheck] | None:
        taken = self._take_due(keys=[self._index], args=[self._prefix, max(1, int(lease_s * 1000))])
        if not taken:
            return None
        key, body = taken
        try:
            stored = json.loads(body)
            pending = PendingCheck(
                request=CheckRequest(stored["username"], stored["url"], stored["link_created_at"]),
                source_event_id=stored["source_event_id"], request_id=stored["request_id"],
                attempts=int(stored["attempts"]), first_attempt_at=parse_timestamp(stored["first_attempt_at"]),
                last_reason=stored["last_reason"], last_failure=stored["last_failure"])
        except (ValueError, KeyError, TypeError):
            self.discard(key)  # unreadable (an older format?): nothing can be done with it
            return None
        return key, pending

    def release(self, key: str, delay_s: float) -> None:
        self._release(keys=[self._index, self._prefix + key], args=[key, max(0, int(delay_s * 1000))])

    def discard(self, key: str, *, if_pending_for: str | None = None) -> None:
        self._discard(keys=[self._index, self._prefix + key], args=[key, if_pending_for or ""])

    def size(self) -> int:
        return int(self._redis.zcard(self._index))
