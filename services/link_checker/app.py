"""Wiring of the link checker: its settings, its adapters, and its definition for the kit.

A worker: it serves no API, only /healthz/* and /metrics on PORT. It consumes link added/updated
events and publishes link-checked events (no database, so no outbox: the input is acked only after
the output is acknowledged by JetStream)."""
from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from ..catalogue import get_service
from ..contracts.events import LINK_CHECKS_STREAM
from ..kit.observability import metrics
from ..kit.observability.logs import get_logger
from ..kit.serving.config import BaseServiceSettings, NatsSettings, RedisSettings
from ..kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from .domain import AddressPolicy, CheckPolicy, CheckRequest, parse_networks
from .events import subscriptions
from .fetcher import AddressGuard, PinnedHttpFetcher, SystemResolver
from .redis_store import RedisHostThrottle, RedisResultCache
from .service import CheckOutcome, LinkCheckService, UrlChecker

log = get_logger(__name__)

DEFAULT_USER_AGENT = "Delinkcious-LinkChecker/1.0 (+https://github.com/the-gigi/delinkcious)"


FACTS = get_service("link-checker")


class LinkCheckerSettings(BaseServiceSettings, NatsSettings, RedisSettings):
    serves_internal_callers: ClassVar[bool] = False  # no API: nothing calls it

    port: int = Field(FACTS.port, ge=1, le=65535, description=(
        "Port for `/healthz/*` and `/metrics` only: the service has no API."))
    shutdown_drain_timeout: float = Field(30.0, gt=0, le=600, description=(
        "Time after SIGTERM for the checks in flight, longer than elsewhere because a check may be retrying. All "
        "of it goes to the consumers: there is no outbox."))

    link_checker_allow_private_addresses: bool = Field(False, description=(
        "`true` turns the server-side request forgery guard off, so every address may be fetched (local testing "
        "only)."))
    link_checker_allowed_networks: str = Field("", description=(
        "Comma-separated CIDR networks fetched despite the guard (e.g. an intranet); never metadata addresses."))

    link_checker_connect_timeout: float = Field(5.0, gt=0, le=60, description=(
        "Time to connect, TLS included."))
    link_checker_timeout: float = Field(10.0, gt=0, le=120, description=(
        "Network time of one attempt, all redirect hops included."))
    link_checker_max_attempts: int = Field(3, ge=1, le=10, description=(
        "Attempts before a transient failure makes the link invalid."))
    link_checker_backoff_initial: float = Field(1.0, ge=0, le=60, description=(
        "Wait before the second attempt; it doubles after each attempt."))
    link_checker_backoff_max: float = Field(10.0, ge=0, le=300, description="Longest back-off between attempts.")
    link_checker_retry_after_max: float = Field(30.0, ge=0, le=300, description=(
        "Longest wait a server's `Retry-After` can ask for; a longer one is cut to this."))
    link_checker_max_redirects: int = Field(5, ge=0, le=20, description=(
        "Redirects followed; a link with more is invalid."))

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

    @property
    def claim_lease_s(self) -> float:
        """How long one replica may hold a URL before another may check it too: a whole check."""
        waits = max(self.link_checker_backoff_max, self.link_checker_retry_after_max)
        return (self.link_checker_max_attempts * (self.link_checker_timeout + self.link_checker_max_host_wait)
                + (self.link_checker_max_attempts - 1) * waits + 10.0)


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, LinkCheckerSettings) and runtime.nats is not None
    nats = runtime.nats
    if settings.link_checker_allow_private_addresses:
        log.warning("private_addresses_allowed",
                    reason="LINK_CHECKER_ALLOW_PRIVATE_ADDRESSES=true: the request forgery guard is off")
    resolver = SystemResolver()
    runtime.on_stop(resolver.close)
    guard = AddressGuard(AddressPolicy(allow_private=settings.link_checker_allow_private_addresses,
                                       allowed_networks=parse_networks(settings.link_checker_allowed_networks)),
                         resolver)
    checker = UrlChecker(
        PinnedHttpFetcher(guard, user_agent=settings.link_checker_user_agent),
        RedisHostThrottle(runtime.redis, interval_s=settings.link_checker_host_interval,
                          max_wait_s=settings.link_checker_max_host_wait),
        CheckPolicy(max_attempts=settings.link_checker_max_attempts,
                    max_redirects=settings.link_checker_max_redirects,
                    backoff_initial_s=settings.link_checker_backoff_initial,
                    backoff_max_s=settings.link_checker_backoff_max,
                    retry_after_max_s=settings.link_checker_retry_after_max),
        connect_timeout_s=settings.link_checker_connect_timeout,
        attempt_timeout_s=settings.link_checker_timeout,
    )
    service = LinkCheckService(checker, RedisResultCache(runtime.redis), lambda event: nats.publish(event),
                               result_ttl_s=settings.link_checker_result_ttl, claim_lease_s=settings.claim_lease_s)

    return ServiceParts(subscriptions=subscriptions(service, lambda request, outcome: _record(runtime.name, request,
                                                                                         outcome)))


def _record(service: str, request: CheckRequest, outcome: CheckOutcome) -> None:
    verdict = outcome.verdict
    metrics.LINK_CHECKS.labels(service, verdict.result, outcome.source).inc()
    if outcome.source == "fetched":
        metrics.LINK_CHECK_DURATION.labels(service, verdict.result).observe(outcome.duration_s)
    log.info("link_checked", user=request.username, target_host=urlsplit(request.url).hostname,
             link_status=verdict.status, check_result=verdict.result,
             check_source=outcome.source, downstream_status=verdict.http_status, reason=verdict.reason,
             attempts=outcome.attempts, duration_ms=round(outcome.duration_s * 1000, 2),
             published_event_id=outcome.event.event_id)


DEFINITION = ServiceDefinition(
    name=FACTS.name,
    settings_class=LinkCheckerSettings,
    build=build,
    publishes=(LINK_CHECKS_STREAM,),
    mode="worker",
)
