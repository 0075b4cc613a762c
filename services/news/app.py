"""Wiring of the news service: settings, adapters, consumers and the gRPC API."""
from __future__ import annotations

from pydantic import Field

from ..catalogue import get_service
from ..kit.observability import metrics
from ..kit.serving.config import BaseServiceSettings, GrpcSettings, NatsSettings, RedisSettings
from ..kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from .events import subscriptions
from .grpc_api import registration
from .service import NewsService
from .store import RedisFeedStore

FACTS = get_service("news")


class NewsSettings(BaseServiceSettings, NatsSettings, RedisSettings, GrpcSettings):
    port: int = Field(FACTS.port, ge=1, le=65535, description=(
        "Port for `/healthz/*` and `/metrics` only: the API is gRPC, on GRPC_PORT."))
    grpc_port: int = Field(FACTS.grpc_port, ge=1, le=65535, description=(
        "Port of the gRPC API (`delinkcious.news.v1.NewsService`, with gRPC health and server reflection)."))
    feed_max_length: int = Field(1000, ge=1, le=100_000, description=(
        "Items kept in each user's feed (`news:feed:{username}` in Redis): the newest are kept, older ones are "
        "trimmed as new ones arrive."))


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, NewsSettings)
    service = NewsService(RedisFeedStore(runtime.redis), feed_max_length=settings.feed_max_length)

    def observe_fanout(followers: int, seconds: float) -> None:
        metrics.FEED_FANOUT_FOLLOWERS.labels(runtime.name).observe(followers)
        metrics.FEED_FANOUT_DURATION.labels(runtime.name).observe(seconds)

    return ServiceParts(subscriptions=subscriptions(service, observe_fanout), grpc_services=[registration(service)])


DEFINITION = ServiceDefinition(name=FACTS.name, settings_class=NewsSettings, build=build, mode="worker")
