"""Redis adapters: per-host politeness shared by every replica, and the result cache with its
per-URL claim. All keys start with the namespace (`link-checker:` by default) and all expire."""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..kit.core.clock import format_timestamp, parse_timestamp
from .domain import Verdict
from .service import CachedVerdict, HostBusy, HostThrottle, ResultCache

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

    def get(self, url_key: str) -> CachedVerdict | None:
        raw = self._redis.get(self._key("result", url_key))
        if raw is None:
            return None
        try:
            stored = json.loads(raw)
            verdict = Verdict(status=stored["status"], http_status=stored["http_status"], reason=stored["reason"],
                              refused=bool(stored.get("refused")))
            return CachedVerdict(verdict, parse_timestamp(stored["checked_at"]))
        except (ValueError, KeyError, TypeError):
            return None  # unreadable (an older format?): check again

    def put(self, url_key: str, cached: CachedVerdict, ttl_s: float) -> None:
        verdict = cached.verdict
        stored = {"status": verdict.status, "http_status": verdict.http_status, "reason": verdict.reason,
                  "refused": verdict.refused, "checked_at": format_timestamp(cached.checked_at)}
        self._redis.set(self._key("result", url_key), json.dumps(stored), px=max(1, int(ttl_s * 1000)))

    def claim(self, url_key: str, lease_s: float) -> str | None:
        token = uuid.uuid4().hex
        claimed = self._redis.set(self._key("checking", url_key), token, nx=True, px=max(1, int(lease_s * 1000)))
        return token if claimed else None

    def release(self, url_key: str, token: str) -> None:
        self._release(keys=[self._key("checking", url_key)], args=[token])
