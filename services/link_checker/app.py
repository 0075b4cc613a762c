"""Wiring of the link checker: its settings, its adapters, and its definition for the kit.

A worker: it serves no API, only /healthz/* and /metrics on PORT. It consumes link added/updated
events and publishes link-checked events for conclusive answers (no database, so no outbox: the input is
acked only after the output is acknowledged by JetStream). Inconclusive checks wait in a retry queue in Redis,
worked by the retry workers; the watch loop looks for the checker's own outage."""
from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from ..catalogue import get_service
from ..contracts.events import LINK_CHECKS_STREAM
from ..kit.core.errors import InvalidInput
from ..kit.observability.health import Check
from ..kit.observability.logs import get_logger
from ..kit.serving.config import BaseServiceSettings, NatsSettings, RedisSettings
from ..kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from .domain import AddressPolicy, CheckPolicy, OutageRule, Outcome, RetryPolicy, parse_networks, validate_check_url
from .events import subscriptions
from .fetcher import AddressGuard, PinnedHttpFetcher, SystemResolver
from .redis_store import RedisHostThrottle, RedisResultCache, RedisRetryQueue
from .reporting import Reporter, network_readiness
from .service import HostBusy, LinkCheckService, NetworkWatch, UrlChecker
from .workers import RetryWorkers, WatchLoop

log = get_logger(__name__)

DEFAULT_USER_AGENT = "Delinkcious-LinkChecker/1.0 (+https://github.com/the-gigi/delinkcious)"

FACTS = get_service("link-checker")

# How often the watch loop looks at the recent checks (and whether a probe is due).
WATCH_INTERVAL_S = 0.5


def parse_canaries(text: str) -> tuple[str, ...]:
    """A comma-separated list of http(s) URLs; raises ValueError naming the first bad entry."""
    canaries: list[str] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            canaries.append(validate_check_url(entry))
        except InvalidInput:
            raise ValueError(f"{entry[:100]!r} is not an absolute http or https URL") from None
    return tuple(canaries)


class LinkCheckerSettings(BaseServiceSettings, NatsSettings, RedisSettings):
    serves_internal_callers: ClassVar[bool] = False  # no API: nothing calls it

    port: int = Field(FACTS.port, ge=1, le=65535, description=(
        "Port for `/healthz/*` and `/metrics` only: the service has no API."))

    link_checker_allow_private_addresses: bool = Field(False, description=(
        "`true` turns the server-side request forgery guard off, so every address may be fetched (local testing "
        "only)."))
    link_checker_allowed_networks: str = Field("", description=(
        "Comma-separated CIDR networks fetched despite the guard (e.g. an intranet); never metadata addresses."))

    link_checker_connect_timeout: float = Field(5.0, gt=0, le=60, description=(
        "Time to connect, TLS included."))
    link_checker_timeout: float = Field(10.0, gt=0, le=120, description=(
        "Network time of one attempt, all redirect hops included."))
    link_checker_max_redirects: int = Field(5, ge=0, le=20, description=(
        "Redirects followed; a link with more is inconclusive (a redirect loop for a client without cookies)."))

    link_checker_max_attempts: int = Field(8, ge=1, le=50, description=(
        "Attempts of a check whose answers are all inconclusive (timeout, 429, 5xx ...); after the last one it is "
        "given up without a verdict, and the link keeps its last conclusive status."))
    link_checker_backoff_initial: float = Field(60.0, gt=0, le=3600, description=(
        "Wait before the second attempt of an inconclusive check; it doubles after each attempt. Each wait is "
        "drawn at random between half of it and all of it (jitter)."))
    link_checker_backoff_max: float = Field(21600.0, gt=0, le=86400, description=(
        "Longest back-off between two attempts of an inconclusive check."))
    link_checker_retry_after_max: float = Field(3600.0, ge=0, le=86400, description=(
        "Longest wait a server's `Retry-After` can ask for (it is honoured when longer than the back-off); a "
        "longer one is cut to this."))
    link_checker_retry_max_age: float = Field(86400.0, gt=0, le=30 * 86400, description=(
        "Age in seconds (from its first attempt) after which an inconclusive check is given up without a verdict."))
    link_checker_retry_concurrency: int = Field(4, ge=1, le=64, description=(
        "Threads per process that check again the inconclusive checks that are due (beside the consumer's "
        "`CONSUMER_MAX_IN_FLIGHT`)."))

    link_checker_outage_window: float = Field(60.0, gt=0, le=3600, description=(
        "Own-outage detection: the recent checks it looks at (seconds)."))
    link_checker_outage_min_checks: int = Field(10, ge=1, le=10000, description=(
        "Own-outage detection: checks needed in the window before it judges."))
    link_checker_outage_threshold: float = Field(0.8, gt=0, le=1, description=(
        "Own-outage detection: share of the window's checks that must have failed the same way (one failure "
        "kind, or any mix of timeouts, refused connections, unreachable networks, resolver and TLS failures)."))
    link_checker_outage_min_hosts: int = Field(3, ge=1, le=1000, description=(
        "Own-outage detection: different hosts those failures must come from (one dead site is no outage)."))
    link_checker_probe_interval: float = Field(30.0, gt=0, le=3600, description=(
        "During an outage of its own, how often the checker probes (the canaries, the hosts that last answered, "
        "the last failing ones) to see it end."))
    link_checker_canary_urls: str = Field("", description=(
        "Comma-separated URLs known to answer, probed to confirm and to end an outage of the checker's own "
        "network, besides the hosts that last answered. They go through the request forgery guard."))

    link_checker_host_interval: float = Field(1.0, ge=0, le=60, description=(
        "Time between requests to one host, over all replicas (kept in Redis); `0` turns this politeness off."))
    link_checker_max_host_wait: float = Field(20.0, gt=0, le=300, description=(
        "Longest wait for a host's turn; beyond it the message is retried later."))
    link_checker_result_ttl: float = Field(3600.0, ge=0, description=(
        "How long a verdict is reused for the same normalised URL; `0` turns the cache off, so every event "
        "fetches."))
    link_checker_user_agent: str = Field(DEFAULT_USER_AGENT, min_length=1, max_length=200, description=(
        "`User-Agent` header sent on every request."))

    @field_validator("link_checker_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("link_checker_canary_urls")
    @classmethod
    def _canaries(cls, value: str) -> str:
        parse_canaries(value)  # raises ValueError naming the bad entry
        return value

    @model_validator(mode="after")
    def _backoff(self) -> LinkCheckerSettings:
        if self.link_checker_backoff_max < self.link_checker_backoff_initial:
            raise ValueError("LINK_CHECKER_BACKOFF_MAX must not be shorter than LINK_CHECKER_BACKOFF_INITIAL")
        return self

    @property
    def attempt_lease_s(self) -> float:
        """How long one replica may hold a URL (or a pending check) before another may check it too: one
        attempt, its politeness waits (HEAD and its GET fallback) included."""
        return self.link_checker_timeout + 2 * self.link_checker_max_host_wait + 10.0

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.link_checker_max_attempts,
                           backoff_initial_s=self.link_checker_backoff_initial,
                           backoff_max_s=self.link_checker_backoff_max,
                           retry_after_max_s=self.link_checker_retry_after_max,
                           max_age_s=self.link_checker_retry_max_age)

    @property
    def outage_rule(self) -> OutageRule:
        return OutageRule(window_s=self.link_checker_outage_window, min_checks=self.link_checker_outage_min_checks,
                          threshold=self.link_checker_outage_threshold, min_hosts=self.link_checker_outage_min_hosts)


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, LinkCheckerSettings) and runtime.nats is not None
    nats = runtime.nats
    stopping = runtime.stopping  # checks are work that can be redone: they give way at once when the stop comes
    if settings.link_checker_allow_private_addresses:
        log.warning("private_addresses_allowed",
                    reason="LINK_CHECKER_ALLOW_PRIVATE_ADDRESSES=true: the request forgery guard is off")
    resolver = SystemResolver(stopping=stopping)
    runtime.on_stop(resolver.close)
    guard = AddressGuard(AddressPolicy(allow_private=settings.link_checker_allow_private_addresses,
                                       allowed_networks=parse_networks(settings.link_checker_allowed_networks)),
                         resolver)
    checker = UrlChecker(
        PinnedHttpFetcher(guard, user_agent=settings.link_checker_user_agent, stopping=stopping),
        RedisHostThrottle(runtime.redis, interval_s=settings.link_checker_host_interval,
                          max_wait_s=settings.link_checker_max_host_wait, sleep=stopping.sleep),
        CheckPolicy(max_redirects=settings.link_checker_max_redirects),
        connect_timeout_s=settings.link_checker_connect_timeout,
        attempt_timeout_s=settings.link_checker_timeout,
    )
    reporter = Reporter(runtime.name)

    def probe(url: str) -> Outcome | None:
        try:
            return checker.check(url).outcome
        except HostBusy:
            return None

    watch = NetworkWatch(settings.outage_rule, probe, canaries=parse_canaries(settings.link_checker_canary_urls),
                         probe_interval_s=settings.link_checker_probe_interval,
                         probe_timeout_s=settings.link_checker_timeout + settings.link_checker_max_host_wait + 1.0,
                         report=reporter.watch_changed)
    retries = RedisRetryQueue(runtime.redis)
    service = LinkCheckService(checker, RedisResultCache(runtime.redis), lambda event: nats.publish(event), retries,
                               watch, retry_policy=settings.retry_policy, result_ttl_s=settings.link_checker_result_ttl,
                               claim_lease_s=settings.attempt_lease_s, sleep=stopping.sleep)

    workers = RetryWorkers(service, retries, watch, concurrency=settings.link_checker_retry_concurrency,
                           poll_interval_s=min(1.0, max(0.1, settings.link_checker_backoff_initial / 4)),
                           lease_s=settings.attempt_lease_s, busy_delay_s=settings.link_checker_max_host_wait,
                           stopping=stopping, record=reporter.retry_made)
    loop = WatchLoop(watch, retries, interval_s=WATCH_INTERVAL_S, stopping=stopping,
                     report_size=reporter.retries_pending)
    runtime.on_stop(lambda: (workers.join(2.0), loop.join(2.0)))  # both saw the stop signal already
    runtime.health.add_readiness_check(Check("checker_network", network_readiness(watch), critical=False))
    runtime.health.add_liveness_check(Check("retry_workers", _alive(workers.is_alive, "the retry workers")))
    runtime.health.add_liveness_check(Check("checker_watch", _alive(loop.is_alive, "the watch loop")))
    workers.start()
    loop.start()
    return ServiceParts(subscriptions=subscriptions(service, watch, reporter.check_made))


def _alive(is_alive: Callable[[], bool], what: str) -> Callable[[], None]:
    def check() -> None:
        if not is_alive():
            raise RuntimeError(f"{what} stopped")

    return check


DEFINITION = ServiceDefinition(
    name=FACTS.name,
    settings_class=LinkCheckerSettings,
    build=build,
    publishes=(LINK_CHECKS_STREAM,),
    mode="worker",
)
