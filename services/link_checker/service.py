"""Use cases of the link checker: check one URL (one attempt: redirects, HEAD->GET fallback, politeness), answer
a link event with a link-checked event when the answer is conclusive, or with a link-check-inconclusive event and
the check scheduled again (or given up) when it is not, and watch the recent checks for the checker's own outage.
The ports name what the use cases need; the adapters (fetcher.py, redis_store.py) implement them."""
from __future__ import annotations

import abc
import hashlib
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from ..contracts.events import Event, LinkChecked, LinkCheckInconclusive, derived_event_id
from ..kit.core.clock import parse_timestamp, utc_now
from ..kit.core.errors import RetryLater
from ..kit.core.request_id import current_request_id
from ..kit.core.urls import normalise_url
from .domain import (
    BELIEVED_IF_NETWORK_SOUND,
    TIMEOUT,
    CheckPolicy,
    CheckRequest,
    Inconclusive,
    Observation,
    OutageRule,
    OutageSuspicion,
    Outcome,
    Redirect,
    Reply,
    RetryPolicy,
    Verdict,
    answered,
    asked_the_network,
)

# The durable JetStream consumer shared by all replicas, and the producer name of derived event ids.
CHECKER_CONSUMER = "link-checker"
# The author of link-checked and link-check-inconclusive events: the checker did the check; the link's owner is
# `username`.
EVENT_AUTHOR = "link-checker"

Source = Literal["fetched", "cached"]


# --- ports ------------------------------------------------------------------------------------
class FetchFailed(Exception):
    """A request got no HTTP answer. `failure` is the kind (domain.TIMEOUT, domain.DNS, ...); `conclusive` when
    the failure is about the link itself (domain.HOST_NOT_FOUND, domain.TLS_NAME_MISMATCH, an invalid name)."""

    def __init__(self, reason: str, failure: str | None, *, conclusive: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure
        self.conclusive = conclusive


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
class CachedOutcome:
    outcome: Outcome
    checked_at: datetime


class CheckInProgress(Exception):
    """Another replica is checking the same URL and has not finished in time: try the message later."""


class CheckerPaused(RetryLater):
    """The checker recognised its own outage and judges nothing until it is over: the message comes back after a
    probe interval, when the outage may be over."""


class ResultCache(abc.ABC):
    """Recent outcomes by normalised URL, with a per-URL claim so one replica fetches at a time."""

    @abc.abstractmethod
    def get(self, url_key: str) -> CachedOutcome | None: ...

    @abc.abstractmethod
    def put(self, url_key: str, cached: CachedOutcome, ttl_s: float) -> None: ...

    @abc.abstractmethod
    def claim(self, url_key: str, lease_s: float) -> str | None:
        """A token if this caller may check `url_key` now (nobody else holds the claim), else None."""

    @abc.abstractmethod
    def release(self, url_key: str, token: str) -> None:
        """Give up the claim, if it is still this token's."""


@dataclass(frozen=True)
class PendingCheck:
    """A check whose attempts so far were all inconclusive, waiting for its next attempt."""

    request: CheckRequest
    source_event_id: str  # the link event it answers: the published event's id derives from it
    request_id: str | None  # the request that saved the link, so the lines and the event join it
    attempts: int
    first_attempt_at: datetime
    last_reason: str
    last_failure: str


class RetryQueue(abc.ABC):
    """Pending checks by key (one per owner and link), each due at a time; shared by every replica."""

    @abc.abstractmethod
    def schedule(self, key: str, pending: PendingCheck, delay_s: float, keep_s: float, *,
                 if_pending_for: str | None = None) -> bool:
        """Store `pending` (replacing any pending check of the same key), due in `delay_s`; it is forgotten
        after `keep_s` if nobody takes it. With `if_pending_for`, only if the key's pending check is still the
        one for that link event (a retry does not replace a newer event's check, nor revive an answered one).
        False if nothing was stored."""

    @abc.abstractmethod
    def take_due(self, lease_s: float) -> tuple[str, PendingCheck] | None:
        """One pending check that is due, leased to the caller: it becomes due again after `lease_s` unless
        the caller schedules, releases or discards it first."""

    @abc.abstractmethod
    def release(self, key: str, delay_s: float) -> None:
        """Hand a taken check back unchanged, due in `delay_s` (the checker is stopping, the host is busy)."""

    @abc.abstractmethod
    def discard(self, key: str, *, if_pending_for: str | None = None) -> None:
        """Forget the key's pending check (with `if_pending_for`: only if it is the one for that link event)."""

    @abc.abstractmethod
    def size(self) -> int: ...


def retry_key(request: CheckRequest) -> str:
    """One pending check per owner and link (by the link service's identity rule): a newer event about the
    same link replaces an older one's."""
    return hashlib.sha256(f"{request.username}\n{normalise_url(request.url)}".encode()).hexdigest()[:40]


# --- checking one URL -------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckReport:
    outcome: Outcome
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
    monotonic: Callable[[], float] = time.monotonic
    clock: Callable[[], datetime] = utc_now

    def check(self, url: str) -> CheckReport:
        """One attempt: the URL's answer, following redirects. Raises HostBusy (the message should wait)."""
        budget = _AttemptBudget(self.attempt_timeout_s)
        outcome = self._attempt(url, budget)
        return CheckReport(outcome, budget.requests)

    def _attempt(self, url: str, budget: _AttemptBudget) -> Outcome:
        current = url
        judged: Outcome | Redirect | None = None
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

    def _request(self, method: str, url: str, budget: _AttemptBudget) -> Reply | Outcome:
        if budget.remaining_s <= 0:
            return Inconclusive(f"timed out: no answer within {budget.total_s:g} s", TIMEOUT)
        self.throttle.wait_turn((urlsplit(url).hostname or "").lower())
        started = self.monotonic()
        budget.requests += 1
        try:
            return self.fetcher.fetch(method, url, connect_timeout=min(self.connect_timeout_s, budget.remaining_s),
                                       timeout=budget.remaining_s)
        except AddressRefused as refused:
            return Verdict.invalid(f"refused: {refused.reason}", refused=True)
        except FetchFailed as failed:
            if failed.conclusive:
                return Verdict.invalid(failed.reason, failure=failed.failure)
            return Inconclusive(failed.reason, failed.failure or TIMEOUT)
        finally:
            budget.spent_s += self.monotonic() - started


# --- the checker's own outage -------------------------------------------------------------------
WatchState = Literal["healthy", "confirming", "outage"]


@dataclass(frozen=True)
class NetworkStatus:
    state: WatchState
    failure: str | None  # what the outage (or the suspicion being confirmed) is made of
    since: datetime | None  # when the outage was declared
    trial: bool  # an outage with nothing trusted to probe: checks are let through as the probe
    checks: int  # fetched checks in the window
    failing: int  # of which failed (any kind)

    @property
    def probe_interval_s(self) -> float:
        return self._probe_interval_s

    @property
    def paused(self) -> bool:
        """Whether judging stops: while a suspicion is being confirmed, and during an outage (but its trial)."""
        return self.state == "confirming" or (self.state == "outage" and not self.trial)


# (event name, status, details): told about every change of state, to log it and set the gauge.
WatchReport = Callable[[str, NetworkStatus, dict[str, Any]], None]
# One attempt at a probe target: its outcome, or None if it could not be tried (host busy, stopping).
Probe = Callable[[str], "Outcome | None"]


def _remember(recent: OrderedDict[str, str], host: str, url: str, keep: int = 16) -> None:
    recent.pop(host, None)
    recent[host] = url
    while len(recent) > keep:
        recent.popitem(last=False)


class NetworkWatch:
    """Recognises the checker's own outage from the checks it fetches (OutageRule), pauses judging while it
    lasts, and probes to see it end.

    - healthy: checks run. When the rule suspects an outage, the suspicion is confirmed by probing targets
      known to answer (the configured canary URLs, the hosts that last answered conclusively): any answer
      disproves it; none declares the outage. With nothing trusted to probe, an outage in which nothing
      answered is declared at once; any other suspicion (NXDOMAIN for everything) is not.
    - confirming: the probes run; judging is paused.
    - outage: judging is paused; every `probe_interval_s` the trusted targets and the last failing ones are
      probed, and the first conclusive answer ends the outage (so does one to a check still in flight). With
      nothing trusted to probe (a checker that started during the outage), a probe round that finds nothing
      starts a trial: checks are let through, a conclusive answer among them ends the outage, and the same
      failures again pause judging.

    A conclusive verdict reached without an HTTP answer (NXDOMAIN, a certificate for another name) is doubted
    (`doubts`) whenever the state is not healthy. `tick` is called periodically by one thread; `record` and
    the properties from any thread."""

    def __init__(self, rule: OutageRule, probe: Probe, *, canaries: Sequence[str] = (), probe_interval_s: float,
                 probe_timeout_s: float, probe_targets: int = 3, report: WatchReport | None = None,
                 monotonic: Callable[[], float] = time.monotonic, clock: Callable[[], datetime] = utc_now,
                 max_observations: int = 10000) -> None:
        self._rule = rule
        self._probe = probe
        self._canaries = tuple(canaries)
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._probe_targets = probe_targets
        self._report = report or (lambda event, status, details: None)
        self._monotonic = monotonic
        self._clock = clock
        self._lock = threading.Lock()
        self._observations: deque[Observation] = deque(maxlen=max_observations)
        self._trusted: OrderedDict[str, str] = OrderedDict()  # host -> the last URL of it answered conclusively
        self._failing: OrderedDict[str, str] = OrderedDict()  # host -> the last URL of it that failed
        self._state: WatchState = "healthy"
        self._failure: str | None = None
        self._since: datetime | None = None
        self._since_monotonic = 0.0
        self._trial = False
        self._next_probe_at = 0.0
        self._quiet_until = 0.0  # after a disproved suspicion: no new one before this

    # --- from any thread --------------------------------------------------------------------------
    def record(self, url: str, outcome: Outcome) -> None:
        """A fetched check's outcome (a refused address or an invalid name says nothing about the network)."""
        if not asked_the_network(outcome):
            return
        host = (urlsplit(url).hostname or "").lower()
        now = self._monotonic()
        ended: tuple[NetworkStatus, dict[str, Any]] | None = None
        with self._lock:
            self._observations.append(Observation(now, host, outcome.failure))
            if answered(outcome):
                _remember(self._trusted, host, url)
                self._failing.pop(host, None)
                if self._state == "outage":  # as good as a probe: the network answers again
                    ended = self._end_locked(now, f"a check of {host} was answered")
            else:
                _remember(self._failing, host, url)
        if ended:
            self._report("checker_outage_ended", *ended)

    @property
    def paused(self) -> bool:
        """Whether judging stops now (see NetworkStatus.paused); cheap enough for every message."""
        with self._lock:
            return self._state == "confirming" or (self._state == "outage" and not self._trial)

    def doubts(self, verdict: Verdict) -> bool:
        """Whether a conclusive verdict reached without an HTTP answer must not be believed now."""
        with self._lock:
            return verdict.failure in BELIEVED_IF_NETWORK_SOUND and self._state != "healthy"

    @property
    def in_doubt(self) -> bool:
        """Whether the checker suspects or has recognised an outage of its own network (confirming, outage, its
        trial): a failure now says more about the checker than about the link."""
        with self._lock:
            return self._state != "healthy"

    def status(self) -> NetworkStatus:
        with self._lock:
            return self._status_locked(self._monotonic())

    # --- from the watching thread -----------------------------------------------------------------
    def tick(self) -> None:
        """Look at the recent checks; confirm a suspicion, or probe an outage when it is due."""
        now = self._monotonic()
        reports: list[tuple[str, NetworkStatus, dict[str, Any]]] = []
        with self._lock:
            state = self._state
            suspicion: OutageSuspicion | None = None
            if state == "healthy":
                if now < self._quiet_until:
                    return
                suspicion = self._rule.suspicion(self._observations, now)
                if suspicion is None:
                    return
                targets = self._trusted_targets_locked()
                if targets:
                    self._state, self._failure = "confirming", suspicion.failure
                    reports.append(("checker_outage_suspected", self._status_locked(now),
                                    {**_details(suspicion), "probed": _hosts(targets)}))
                elif self._rule.declared_without_probe(suspicion.failure):
                    self._declare_locked(suspicion.failure, now)
                    reports.append(("checker_outage_began", self._status_locked(now),
                                    {**_details(suspicion), "probed": []}))
                else:  # nothing to confirm it with, and something answered (NXDOMAIN): not declared
                    self._quiet_until = now + self._probe_interval_s
                    reports.append(("checker_outage_unconfirmed", self._status_locked(now),
                                    {**_details(suspicion), "probed": []}))
            elif state == "outage":
                if self._trial:
                    suspicion = self._rule.suspicion(self._observations, now)
                    if suspicion is not None:  # the trial failed the same way: pause again
                        self._trial = False
                        self._observations.clear()
                        self._next_probe_at = now + self._probe_interval_s
                        reports.append(("checker_outage_trial_failed", self._status_locked(now), _details(suspicion)))
                    targets = []
                elif now < self._next_probe_at:
                    targets = []
                else:
                    failing = [url for url in reversed(self._failing.values())][:self._probe_targets]
                    targets = _unique([*self._trusted_targets_locked(), *failing])
            else:
                targets = []
        for report in reports:
            self._report(*report)
        if not targets:
            return
        results = self._probe_all(targets)
        answering = [url for url, outcome in results.items() if outcome is not None and answered(outcome)]
        details = {"probed": _hosts(targets), "answered": _hosts(answering)}
        later = self._monotonic()
        with self._lock:
            if self._state == "confirming":
                if answering:
                    self._state, self._failure = "healthy", None
                    self._quiet_until = later + self._probe_interval_s
                    self._observations.clear()
                    report = ("checker_outage_disproved", self._status_locked(later), {**details, **_details(suspicion)})
                else:
                    assert suspicion is not None
                    self._declare_locked(suspicion.failure, later)
                    report = ("checker_outage_began", self._status_locked(later), {**details, **_details(suspicion)})
            elif self._state == "outage" and not self._trial:
                self._next_probe_at = later + self._probe_interval_s
                if answering:
                    report = ("checker_outage_ended", *self._end_locked(later, "a probe was answered", details))
                elif not self._canaries and not self._trusted:
                    self._trial = True
                    self._observations.clear()
                    report = ("checker_outage_trial", self._status_locked(later), details)
                else:
                    report = ("checker_outage_probed", self._status_locked(later), details)
            else:
                return  # ended meanwhile by a check's answer
        self._report(*report)

    # --- inside ------------------------------------------------------------------------------------
    def _trusted_targets_locked(self) -> list[str]:
        trusted = [url for url in reversed(self._trusted.values())][:self._probe_targets]
        return _unique([*self._canaries, *trusted])

    def _declare_locked(self, failure: str, now: float) -> None:
        self._state, self._failure, self._trial = "outage", failure, False
        self._since, self._since_monotonic = self._clock(), now
        self._next_probe_at = now + self._probe_interval_s

    def _end_locked(self, now: float, by: str,
                    details: dict[str, Any] | None = None) -> tuple[NetworkStatus, dict[str, Any]]:
        lasted = now - self._since_monotonic
        self._state, self._failure, self._since, self._trial = "healthy", None, None, False
        self._observations.clear()
        return self._status_locked(now), {**(details or {}), "ended_by": by, "outage_s": round(lasted, 3)}

    def _status_locked(self, now: float) -> NetworkStatus:
        recent = self._rule.recent(self._observations, now)
        return NetworkStatus(self._state, self._failure, self._since, self._trial, len(recent),
                             sum(1 for seen in recent if seen.failure is not None))

    def _probe_all(self, targets: list[str]) -> dict[str, Outcome | None]:
        """One attempt at each target, at once; those without an outcome in time count as unanswered."""
        results: dict[str, Outcome | None] = {}

        def probe(url: str) -> None:
            try:
                results[url] = self._probe(url)
            except Exception:  # noqa: BLE001 - a probe that failed is a probe not answered
                results[url] = None

        threads = [threading.Thread(target=probe, args=(url,), name="link-checker-probe", daemon=True)
                   for url in targets]
        for thread in threads:
            thread.start()
        deadline = self._monotonic() + self._probe_timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - self._monotonic()))
        return {url: results.get(url) for url in targets}


def _unique(urls: list[str]) -> list[str]:
    return list(dict.fromkeys(urls))


def _hosts(urls: list[str]) -> list[str]:
    """Probe targets as logged: host names only, never a user's full URL."""
    return _unique([(urlsplit(url).hostname or "") for url in urls])


def _details(suspicion: OutageSuspicion | None) -> dict[str, Any]:
    if suspicion is None:
        return {}
    return {"check_failure": suspicion.failure, "checks": suspicion.checks, "failing": suspicion.failing,
            "hosts": suspicion.hosts}


# --- answering link events --------------------------------------------------------------------
@dataclass(frozen=True)
class Published:
    """A conclusive verdict, published for the link's owner."""

    verdict: Verdict
    checked_at: datetime
    source: Source
    event: Event
    attempts: int  # this check's attempt number (1: the first)
    duration_s: float


@dataclass(frozen=True)
class Deferred:
    """An inconclusive answer: no verdict, the attempt is announced (`announced`, None while the checker doubts its
    own network), and the check is scheduled again (unless, for a retry, the link has a newer event's check
    meanwhile, or was answered: `superseded`, and that check goes on)."""

    inconclusive: Inconclusive
    source: Source
    attempts: int
    retry_in_s: float
    duration_s: float
    superseded: bool = False
    announced: Event | None = None


@dataclass(frozen=True)
class GivenUp:
    """An inconclusive answer after which the check is not tried again: no verdict is ever published for it; the
    attempt is announced as the last one (`announced`, None while the checker doubts its own network)."""

    inconclusive: Inconclusive
    source: Source
    attempts: int
    age_s: float
    why: str
    duration_s: float
    announced: Event | None = None


CheckResult = Published | Deferred | GivenUp


@dataclass
class LinkCheckService:
    checker: UrlChecker
    cache: ResultCache
    publish: Callable[[Event], None]
    retries: RetryQueue
    watch: NetworkWatch
    _: KW_ONLY
    retry_policy: RetryPolicy
    result_ttl_s: float
    claim_lease_s: float
    poll_interval_s: float = 0.1
    clock: Callable[[], datetime] = utc_now
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    draw: Callable[[], float] = random.random

    def check_link(self, request: CheckRequest, *, source_event_id: str,
                   pending: PendingCheck | None = None) -> CheckResult:
        """One attempt at the link (the outcome cached, or fetched). A conclusive verdict is published for this
        owner, and the event's id derives from the link event's, so handling a redelivery again publishes the
        same event. An inconclusive one publishes no verdict: the attempt is announced (a link-check-inconclusive
        event, whose id derives from the link event's and the attempt's number, published before the retry queue
        changes, so a failure to publish leaves the check as it was), and the check is scheduled again with
        back-off, or given up once the retry policy says so. Nothing is announced while the checker doubts its own
        network (NetworkWatch.in_doubt): that failure is not the link's. `pending` is the check's state when this
        is a retry."""
        started = self.monotonic()
        attempts = (pending.attempts if pending else 0) + 1
        outcome, checked_at, source = self._outcome(request.url)
        key = retry_key(request)
        if isinstance(outcome, Verdict):
            event = link_checked_event(request, outcome, checked_at,
                                       event_id=derived_event_id(source_event_id, CHECKER_CONSUMER), now=self.clock())
            self.publish(event)
            self.retries.discard(key)  # a pending check of the same link (an older event) is answered too
            return Published(outcome, checked_at, source, event, attempts, self.monotonic() - started)
        now = self.clock()
        first_attempt_at = pending.first_attempt_at if pending else now
        age_s = max(0.0, (now - first_attempt_at).total_seconds())
        decision = self.retry_policy.decide(attempts, age_s, outcome, self.draw())
        own = pending.source_event_id if pending else None  # a retry touches only its own pending check
        next_attempt_at = None if decision.delay_s is None else now + timedelta(seconds=decision.delay_s)
        announced = self._announce(request, outcome, checked_at, attempts, next_attempt_at, source_event_id)
        if decision.delay_s is None:
            self.retries.discard(key, if_pending_for=own)
            return GivenUp(outcome, source, attempts, age_s, decision.why or "", self.monotonic() - started,
                           announced)
        scheduled = self.retries.schedule(
            key, PendingCheck(request, source_event_id, current_request_id(), attempts, first_attempt_at,
                              outcome.reason, outcome.failure),
            decision.delay_s, keep_s=max(decision.delay_s, self.retry_policy.max_age_s - age_s) + 3600.0,
            if_pending_for=own)
        return Deferred(outcome, source, attempts, decision.delay_s, self.monotonic() - started,
                        superseded=not scheduled, announced=announced)

    def _announce(self, request: CheckRequest, outcome: Inconclusive, attempted_at: datetime, attempts: int,
                  next_attempt_at: datetime | None, source_event_id: str) -> Event | None:
        """Publish the attempt for the link's owner, unless the checker doubts its own network."""
        if self.watch.in_doubt:
            return None
        event = inconclusive_event(
            request, outcome, attempted_at, attempts=attempts, next_attempt_at=next_attempt_at,
            event_id=derived_event_id(source_event_id, f"{CHECKER_CONSUMER}:attempt:{attempts}"), now=self.clock())
        self.publish(event)
        return event

    def _outcome(self, url: str) -> tuple[Outcome, datetime, Source]:
        if self.result_ttl_s <= 0:
            return self._fetch(url), self.clock(), "fetched"
        url_key = normalise_url(url)
        give_up_at = self.monotonic() + self.claim_lease_s
        while True:
            cached = self.cache.get(url_key)
            if cached is not None:
                return cached.outcome, cached.checked_at, "cached"
            token = self.cache.claim(url_key, self.claim_lease_s)
            if token is not None:
                try:
                    cached = self.cache.get(url_key)  # stored by another between our get and claim
                    if cached is not None:
                        return cached.outcome, cached.checked_at, "cached"
                    outcome = self._fetch(url)
                    checked_at = self.clock()
                    self.cache.put(url_key, CachedOutcome(outcome, checked_at), self._keep_s(outcome))
                    return outcome, checked_at, "fetched"
                finally:
                    self.cache.release(url_key, token)
            if self.monotonic() >= give_up_at:
                raise CheckInProgress(f"another checker has held {url_key} for {self.claim_lease_s:g} s")
            self.sleep(self.poll_interval_s)

    def _keep_s(self, outcome: Outcome) -> float:
        """How long an outcome is reused: a verdict for the TTL; an inconclusive outcome only briefly (the other
        owners checking the same URL at once take it instead of asking the server again), for less than any
        retry's delay, so every retry asks the server."""
        if isinstance(outcome, Verdict):
            return self.result_ttl_s
        return max(0.001, min(self.result_ttl_s, self.retry_policy.shortest_delay_s / 2))

    def _fetch(self, url: str) -> Outcome:
        outcome = self.checker.check(url).outcome
        self.watch.record(url, outcome)
        if isinstance(outcome, Verdict) and self.watch.doubts(outcome):
            return Inconclusive(f"{outcome.reason} (not believed while the checker's own network is in doubt)",
                                outcome.failure)
        return outcome


def link_checked_event(request: CheckRequest, verdict: Verdict, checked_at: datetime, *, event_id: str,
                       now: datetime) -> Event:
    """The verdict for one owner's link, as the link service applies it."""
    return LinkChecked(
        username=request.username, url=request.url, status=verdict.status, http_status=verdict.http_status,
        reason=verdict.reason, checked_at=checked_at,
        link_created_at=parse_timestamp(request.link_created_at) if request.link_created_at else None,
    ).to_event(author=EVENT_AUTHOR, event_id=event_id, occurred_at=now)


def inconclusive_event(request: CheckRequest, inconclusive: Inconclusive, attempted_at: datetime, *, attempts: int,
                       next_attempt_at: datetime | None, event_id: str, now: datetime) -> Event:
    """An attempt at one owner's link that reached no verdict, as the link service records it: when it is tried
    next, or (`next_attempt_at` None) that it was given up."""
    return LinkCheckInconclusive(
        username=request.username, url=request.url, attempted_at=attempted_at, reason=inconclusive.reason,
        failure=inconclusive.failure, attempts=attempts, next_attempt_at=next_attempt_at,
        given_up=next_attempt_at is None, http_status=inconclusive.http_status,
        link_created_at=parse_timestamp(request.link_created_at) if request.link_created_at else None,
    ).to_event(author=EVENT_AUTHOR, event_id=event_id, occurred_at=now)
