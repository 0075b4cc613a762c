"""Wiring of the news service: settings, adapters, consumers, the gRPC API and the store guard; and the
`delinkcious news rebuild` command."""
from __future__ import annotations

from collections.abc import Callable

from pydantic import Field

from ..catalogue import get_service
from ..kit.observability import metrics
from ..kit.observability.health import Check
from ..kit.observability.logs import configure_logging, get_logger
from ..kit.serving.config import (
    BaseServiceSettings,
    ConfigurationError,
    GrpcSettings,
    NatsSettings,
    PageTokenSecret,
    RedisSettings,
    RequiredSecret,
    ServiceUrl,
    load_settings,
    page_tokens,
)
from ..kit.serving.http_client import ServiceClient
from ..kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from .events import subscriptions
from .grpc_api import registration
from .guard import StoreGuard
from .service import NewsService, StoreRebuild
from .sources import LinkServiceLinks, SocialGraphFollows
from .store import RedisFeedStore

FACTS = get_service("news")
# The author's newest items kept for followers whose follow event comes late (store.py, news:authored:*).
AUTHORED_HISTORY = 200
# A page of the owners' internal listings may take a while: up to 1,000 rows, read and sorted.
OWNER_READ_TIMEOUT_S = 30.0


class NewsSettings(BaseServiceSettings, NatsSettings, RedisSettings, GrpcSettings):
    port: int = Field(FACTS.port, ge=1, le=65535, description=(
        "Port for `/healthz/*` and `/metrics` only: the API is gRPC, on GRPC_PORT."))
    grpc_port: int = Field(FACTS.grpc_port, ge=1, le=65535, description=(
        "Port of the gRPC API (`delinkcious.news.v1.NewsService`, with gRPC health and server reflection)."))
    feed_max_length: int = Field(1000, ge=1, le=100_000, description=(
        "Items kept in each user's feed (`news:feed:{username}` in Redis): the newest are kept, older ones are "
        "trimmed as new ones arrive. A rebuild refills each feed with this many of the newest links of the people "
        "its owner follows."))
    social_graph_service_url: ServiceUrl = Field(description=(
        "The social-graph service, an absolute `http://` or `https://` URL: the owner of who follows whom, read "
        "(`GET /internal/v1/follows`) when the store is rebuilt (see [rebuilding the store]"
        "(../services/news/README.md#rebuilding-the-store))."))
    link_service_url: ServiceUrl = Field(description=(
        "The link service, an absolute `http://` or `https://` URL: the owner of the links, read "
        "(`GET /internal/v1/users/{username}/links`) when the store is rebuilt."))
    caller_token: RequiredSecret = Field(description=(
        "As for every service, but required here and not empty: news reads social-graph and link when it "
        "rebuilds its store, and they want to know who is calling."))
    page_token_secret: PageTokenSecret
    store_check_interval: float = Field(30.0, gt=0, le=3600, description=(
        "How often (seconds) news looks for its store's generation marker in Redis; it also looks at start-up "
        "and, about once a second, while consuming events. A missing marker (a new or emptied Redis) starts a "
        "rebuild from social-graph and link."))


def store_guard(name: str, settings: NewsSettings, store: RedisFeedStore) -> tuple[StoreGuard, list[ServiceClient]]:
    """The guard of `store`, rebuilding it from the owners at the settings' URLs; and its clients, to close."""
    token = settings.caller_token.get_secret_value()
    clients = [ServiceClient(url, caller_token=token, read_timeout=OWNER_READ_TIMEOUT_S)
               for url in (settings.social_graph_service_url, settings.link_service_url)]
    rebuild = StoreRebuild(store, SocialGraphFollows(clients[0]), LinkServiceLinks(clients[1]),
                           feed_max_length=settings.feed_max_length, authored_history=AUTHORED_HISTORY)
    return StoreGuard(name, store, rebuild, interval_s=settings.store_check_interval), clients


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, NewsSettings)
    store = RedisFeedStore(runtime.redis)
    service = NewsService(store, feed_max_length=settings.feed_max_length, authored_history=AUTHORED_HISTORY,
                          page_tokens=page_tokens(settings.page_token_secret))

    def observe_fanout(followers: int, seconds: float) -> None:
        metrics.FEED_FANOUT_FOLLOWERS.labels(runtime.name).observe(followers)
        metrics.FEED_FANOUT_DURATION.labels(runtime.name).observe(seconds)

    guard, clients = store_guard(runtime.name, settings, store)
    for client in clients:
        runtime.on_stop(client.close)
    runtime.on_stop(guard.stop)  # called first: before the clients close and Redis does
    runtime.health.add_readiness_check(Check("feed_store", guard.readiness, critical=False))
    runtime.health.add_liveness_check(Check("store_guard", _alive(guard)))
    guard.start()
    return ServiceParts(subscriptions=subscriptions(service, observe_fanout, guard.notice),
                        grpc_services=[registration(service)])


def _alive(guard: StoreGuard) -> Callable[[], None]:
    def check() -> None:
        if not guard.is_alive():
            raise RuntimeError("the store guard's thread has stopped")

    return check


def rebuild_command(lock_wait_s: float) -> int:
    """`delinkcious news rebuild`: rebuild the store now, with the service's own settings (the same environment
    as `delinkcious serve news`). 0 when done, 1 when it could not be done (an owner or Redis unavailable, the
    lock held longer than `lock_wait_s`), 2 on bad settings."""
    import redis

    try:
        settings = load_settings(NewsSettings, service_name=FACTS.name)
    except ConfigurationError as error:
        configure_logging(FACTS.name)
        get_logger(__name__).error("startup_failed", error=error.message)
        return 2
    configure_logging(FACTS.name, settings.log_format, settings.log_level)
    log = get_logger(__name__)
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    client = redis.Redis.from_url(settings.redis_url, password=password, socket_timeout=settings.redis_timeout,
                                  socket_connect_timeout=settings.redis_timeout, decode_responses=True,
                                  client_name=f"{FACTS.name}-rebuild")
    guard, clients = store_guard(FACTS.name, settings, RedisFeedStore(client))
    try:
        result = guard.rebuild("command", lock_wait_s=lock_wait_s)
    except Exception as exc:  # a rebuild that started and stopped was logged (projection_rebuild_stopped) too
        log.error("projection_rebuild_failed", error=str(exc) or type(exc).__name__)
        return 1
    finally:
        for service_client in clients:
            service_client.close()
        client.close()
    if result is None:
        log.error("projection_rebuild_failed", error=f"another rebuild held the lock for more than {lock_wait_s} s")
        return 1
    return 0  # the guard logged projection_rebuild_completed, with what was rebuilt


DEFINITION = ServiceDefinition(name=FACTS.name, settings_class=NewsSettings, build=build, mode="worker")
