"""Use cases of the link checker: check one URL (attempts, redirects, HEAD->GET fallback, politeness)
and answer a link event with a link-checked event, fetching each normalised URL once per TTL.
The ports name what the use cases need; the adapters (fetcher.py, redis_store.py) implement them."""
from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from ..contracts.events import Event, LinkChecked, derived_event_id
from ..kit.core.clock import parse_timestamp, utc_now
from ..kit.core.urls import normalise_url
from .domain import CheckPolicy, CheckRequest, Redirect, Reply, Transient, Verdict

# The durable JetStream consumer shared by all replicas, and the producer name of derived event ids.
CHECKER_CONSUMER = "link-checker"
# The author of link-checked events: the checker did the check; the link's owner is `username`.
EVENT_AUTHOR = "link-checker"


# --- ports ------------------------------------------------------------------------------------
class FetchFailed(Exception):
    """A request got no HTTP answer (timeout, connection or TLS failure, unknown host)."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class AddressRefused(Exception):
    """The server-side request forgery guard refused to connect (the reason names the address)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Fetcher(abc.ABC):
    @abc.abstractmethod
    def fetch(self, method: str, url: str, *, connect_timeout: float, timeout: float) -> Reply:
        """One request, following no redirect, reading no body. The host is resolved, every address
        it resolves to is checked against the address policy (AddressRefused), and the connection
        goes only to an address that was checked. `timeout` bounds the whole request (wall clock)
        until the status line and headers are in. Raises FetchFailed when there is no answer."""


class HostBusy(Exception):
    """The host's politeness queue is longer than the checker may wait: try the message later."""


class HostThrottle(abc.ABC):
    @abc.abstractmethod
    def wait_turn(self, host: str) -> float:
        """Block until a request to `host` is polite (shared by all replicas); returns the seconds
        waited. Raises HostBusy if the turn is too far away."""


@dataclass(frozen=True)
class CachedVerdict:
    verdict: Verdict
    checked_at: datetime


class CheckInProgress(Exception):
    """Another replica is checking the same URL and has not finished in time: try the message later."""


class ResultCache(abc.ABC):
    """Recent verdicts by normalised URL, with a per-URL claim so one replica fetches at a time."""

    @abc.abstractmethod
    def get(self, url_key: str) -> CachedVerdict | None: ...

    @abc.abstractmethod
    def put(self, url_key: str, cached: CachedVerdict, ttl_s: float) -> None: ...

    @abc.abstractmethod
    def claim(self, url_key: str, lease_s: float) -> str | None:
        """A token if this caller may check `url_key` now (nobody else holds the claim), else None."""

    @abc.abstractmethod
    def release(self, url_key: str, token: str) -> None:
        """Give up the claim, if it is still this token's."""


# --- checking one URL -------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckReport:
    verdict: Verdict
    attempts: int
    requests: int


@dataclass
class _AttemptBudget:
    """Network time one attempt may spend over all its requests (politeness waits do not count)."""

    total_s: float
    spent_s: float = 0.0
    requests: int = field(default=0)

    @property
    def remaining_s(self) -> float:
        return self.total_s - self.spent_s


@dataclass
class UrlChecker:
    fetcher: Fetcher
    throttle: HostThrottle
    policy: CheckPolicy
    _: KW_ONLY
    connect_timeout_s: float
    attempt_timeout_s: float
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    clock: Callable[[], datetime] = utc_now

    def check(self, url: str) -> CheckReport:
        """Attempt until a verdict; transient failures are retried with back-off, and the URL is
        invalid once the attempts run out. Raises HostBusy (the message should wait)."""
        requests = 0
        attempt = 1
        while True:
            budget = _AttemptBudget(self.attempt_timeout_s)
            outcome = self._attempt(url, budget)
            requests += budget.requests
            if isinstance(outcome, Verdict):
                return CheckReport(outcome, attempt, requests)
            if attempt >= self.policy.max_attempts:
                return CheckReport(self.policy.give_up(outcome, attempt), attempt, requests)
            self.sleep(self.policy.retry_delay(attempt, outcome))
            attempt += 1

    def _attempt(self, url: str, budget: _AttemptBudget) -> Verdict | Transient:
        current = url
        judged: Verdict | Transient | Redirect | None = None
        for _hop in range(self.policy.max_redirects + 1):
            reply = self._request("HEAD", current, budget)
            if isinstance(reply, Reply) and self.policy.falls_back_to_get(reply):
                reply = self._request("GET", current, budget)
            if not isinstance(reply, Reply):
                return reply
            judged = self.policy.judge(reply, current, self.clock())
            if not isinstance(judged, Redirect):
                return judged
            current = judged.target
        assert isinstance(judged, Redirect)
        return self.policy.too_many_redirects(judged.http_status)

    def _request(self, method: str, url: str, budget: _AttemptBudget) -> Reply | Verdict | Transient:
        if budget.remaining_s <= 0:
            return Transient(f"timed out after {budget.total_s:g} s")
        self.throttle.wait_turn((urlsplit(url).hostname or "").lower())
        started = self.monotonic()
        budget.requests += 1
        try:
            return self.fetcher.fetch(method, url, connect_timeout=min(self.connect_timeout_s, budget.remaining_s),
                                       timeout=budget.remaining_s)
        except AddressRefused as refused:
            return Verdict.invalid(f"refused: {refused.reason}", refused=True)
        except FetchFailed as failed:
            return Transient(failed.reason) if failed.transient else Verdict.invalid(failed.reason)
        finally:
            budget.spent_s += self.monotonic() - started


# --- answering link events --------------------------------------------------------------------
@dataclass(frozen=True)
class CheckOutcome:
    verdict: Verdict
    checked_at: datetime
    source: Literal["fetched", "cached"]
    event: Event
    attempts: int
    duration_s: float


@dataclass
class LinkCheckService:
    checker: UrlChecker
    cache: ResultCache
    publish: Callable[[Event], None]
    _: KW_ONLY
    result_ttl_s: float
    claim_lease_s: float
    poll_interval_s: float = 0.1
    clock: Callable[[], datetime] = utc_now
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic

    def check_link(self, request: CheckRequest, *, source_event_id: str) -> CheckOutcome:
        """Find the verdict (cached, or fetched) and publish it for this owner. The published event's
        id derives from the consumed one, so handling a redelivery again publishes the same event."""
        started = self.monotonic()
        cached, source, attempts = self._verdict(request.url)
        event = link_checked_event(request, cached, event_id=derived_event_id(source_event_id, CHECKER_CONSUMER),
                                   now=self.clock())
        self.publish(event)
        return CheckOutcome(cached.verdict, cached.checked_at, source, event, attempts,
                            self.monotonic() - started)

    def _verdict(self, url: str) -> tuple[CachedVerdict, Literal["fetched", "cached"], int]:
        if self.result_ttl_s <= 0:
            report = self.checker.check(url)
            return CachedVerdict(report.verdict, self.clock()), "fetched", report.attempts
        url_key = normalise_url(url)
        give_up_at = self.monotonic() + self.claim_lease_s
        while True:
            cached = self.cache.get(url_key)
            if cached is not None:
                return cached, "cached", 0
            token = self.cache.claim(url_key, self.claim_lease_s)
            if token is not None:
                try:
                    cached = self.cache.get(url_key)  # stored by another between our get and claim
                    if cached is not None:
                        return cached, "cached", 0
                    report = self.checker.check(url)
                    cached = CachedVerdict(report.verdict, self.clock())
                    self.cache.put(url_key, cached, self.result_ttl_s)
                    return cached, "fetched", report.attempts
                finally:
                    self.cache.release(url_key, token)
            if self.monotonic() >= give_up_at:
                raise CheckInProgress(f"another checker has held {url_key} for {self.claim_lease_s:g} s")
            self.sleep(self.poll_interval_s)


def link_checked_event(request: CheckRequest, cached: CachedVerdict, *, event_id: str, now: datetime) -> Event:
    """The verdict for one owner's link, as the link service applies it."""
    verdict = cached.verdict
    return LinkChecked(
        username=request.username, url=request.url, status=verdict.status, http_status=verdict.http_status,
        reason=verdict.reason, checked_at=cached.checked_at,
        link_created_at=parse_timestamp(request.link_created_at) if request.link_created_at else None,
    ).to_event(author=EVENT_AUTHOR, event_id=event_id, occurred_at=now)
