"""Wiring of the news service: settings, adapters, consumers and the gRPC API."""
from __future__ import annotations

import time

from pydantic import Field

from ..catalogue import get_service
from ..contracts.events import (
    FOLLOWED,
    LINK_ADDED,
    LINK_DELETED,
    LINK_UPDATED,
    LINKS_STREAM,
    SOCIAL_STREAM,
    UNFOLLOWED,
    Event,
)
from ..kit.messaging.consumer import Subscription
from ..kit.observability import metrics
from ..kit.serving.config import BaseServiceSettings, GrpcSettings, NatsSettings, RedisSettings
from ..kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from .grpc_api import registration
from .service import NewsService
from .store import RedisFeedStore

FACTS = get_service("news")

class NewsSettings(BaseServiceSettings, NatsSettings, RedisSettings, GrpcSettings):
    port: int = Field(FACTS.port, ge=1, le=65535)  # /healthz and /metrics
    grpc_port: int = Field(FACTS.grpc_port, ge=1, le=65535)
    feed_max_length: int = Field(1000, ge=1, le=100_000)


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, NewsSettings)
    service = NewsService(RedisFeedStore(runtime.redis), feed_max_length=settings.feed_max_length)

    def on_link_event(event: Event) -> None:
        started = time.perf_counter()
        followers = service.apply_link_event(event)
        metrics.FEED_FANOUT_FOLLOWERS.labels(runtime.name).observe(followers)
        metrics.FEED_FANOUT_DURATION.labels(runtime.name).observe(time.perf_counter() - started)

    def on_follow_event(event: Event) -> None:
        if event.subject == FOLLOWED:
            service.apply_follow(event)
        else:
            service.apply_unfollow(event)

    return ServiceParts(
        subscriptions=[
            # Every write below is idempotent by construction (same event, same state), which is what
            # makes redelivery and replay harmless without a separate dedup record.
            Subscription(LINKS_STREAM, (LINK_ADDED, LINK_UPDATED, LINK_DELETED), durable="news-link-events",
                         handler=on_link_event),
            Subscription(SOCIAL_STREAM, (FOLLOWED, UNFOLLOWED), durable="news-follow-events",
                         handler=on_follow_event),
        ],
        grpc_services=[registration(service)],
    )


DEFINITION = ServiceDefinition(name=FACTS.name, settings_class=NewsSettings, build=build, mode="worker")
