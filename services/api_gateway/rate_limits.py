"""Rate limits with their counters in Redis: one round trip per request for every limit that applies to it.

flask-limiter makes a round trip per limit (the per-address limit before authentication, then the per-user
limit), and offers no way to check several limits at once; this runs them all in one Lua script. Each limit
is a moving window, as flask-limiter's moving-window strategy was: at most `amount` requests in any window of
its length, with no burst at a window boundary (a list of the last `amount` request times per key)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import redis
from limits import RateLimitItem, parse_many

from ..catalogue import get_service
from ..kit.core.errors import ServiceError
from ..kit.observability import metrics
from ..kit.observability.logs import get_logger

log = get_logger(__name__)

SERVICE = get_service("api-gateway").name  # the `service` label of the rejections counter

# KEYS: one list per limit, newest request time first. ARGV: each limit's amount and window (ms), in KEYS' order.
# The limits are checked in order; each admits and records the request until the first that refuses it, whose
# index (1-based) is returned with the milliseconds until it admits a request again. 0: every limit admitted it.
# The time is Redis's own, so the gateway instances' clocks do not matter.
_MOVING_WINDOWS = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for i, key in ipairs(KEYS) do
    local amount = tonumber(ARGV[2 * i - 1])
    local window_ms = tonumber(ARGV[2 * i])
    local oldest_counted = redis.call('LINDEX', key, amount - 1)
    if oldest_counted and tonumber(oldest_counted) > now_ms - window_ms then
        return {i, tonumber(oldest_counted) + window_ms - now_ms}
    end
    redis.call('LPUSH', key, now_ms)
    redis.call('LTRIM', key, 0, amount - 1)
    redis.call('PEXPIRE', key, window_ms)
end
return 0
"""

STORAGE_WARNING_INTERVAL_S = 30.0


class RateLimited(ServiceError, status=429, code="rate_limited"):
    def __init__(self, limit: RateLimitItem, retry_after_s: int) -> None:
        super().__init__(f"rate limit exceeded ({limit}); retry later")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class _Limit:
    item: RateLimitItem
    scope: str  # "address" or "user"

    def key(self, prefix: str, subject: str) -> str:
        return f"{prefix}:{self.scope}:{self.item.amount}/{self.item.get_expiry()}s:{subject}"

    @property
    def metric_label(self) -> str:
        """The `limit` label of delinkcious_rate_limit_rejections_total: per_address or per_user."""
        return f"per_{self.scope}"


class RateLimiter:
    """Per-address limits (every request, checked before authentication) and per-user limits (signed-in
    requests), in flask-limiter's notation (`100/minute;2000/hour`). While Redis does not answer, requests are
    let through: the limits are not enforced, and a warning is logged now and then."""

    def __init__(self, client: redis.Redis, *, per_address: str, per_user: str, key_prefix: str = "gateway") -> None:
        self._client = client
        self._script = client.register_script(_MOVING_WINDOWS)
        self._per_address = [_Limit(item, "address") for item in parse_many(per_address)]
        self._per_user = [_Limit(item, "user") for item in parse_many(per_user)]
        self._key_prefix = key_prefix
        self._warned_at = -math.inf
        # Both series exist at 0 from start-up, so rate() and increase() see the first rejection.
        self._rejections = {limit: metrics.RATE_LIMIT_REJECTIONS.labels(SERVICE, limit)
                            for limit in metrics.RATE_LIMITS}

    def check(self, address: str, username: str | None = None) -> None:
        """Counts a request from `address` (and by `username`, when it is known) against its limits; RateLimited
        if one of them is exhausted."""
        limits = [(limit, address) for limit in self._per_address]
        if username is not None:
            limits += [(limit, username) for limit in self._per_user]
        self._run(limits)

    def check_user(self, username: str) -> None:
        """Counts a request by `username` against the per-user limits alone (its address was counted already)."""
        self._run([(limit, username) for limit in self._per_user])

    def _run(self, limits: list[tuple[_Limit, str]]) -> None:
        if not limits:
            return
        keys = [limit.key(self._key_prefix, subject) for limit, subject in limits]
        arguments: list[Any] = []
        for limit, _ in limits:
            arguments += [limit.item.amount, limit.item.get_expiry() * 1000]
        try:
            refused = self._script(keys=keys, args=arguments)
        except redis.RedisError as error:
            self._warn_storage_down(error)
            return
        if refused:
            index, retry_after_ms = refused
            limit, _ = limits[int(index) - 1]
            self._rejections[limit.metric_label].inc()
            raise RateLimited(limit.item, retry_after_s=max(1, math.ceil(int(retry_after_ms) / 1000)))

    def _warn_storage_down(self, error: redis.RedisError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= STORAGE_WARNING_INTERVAL_S:  # a racy read costs at most an extra line
            self._warned_at = now
            log.warning("rate_limits_not_enforced", error=f"{type(error).__name__}: {error}")
