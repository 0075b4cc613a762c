"""Everything a service process holds while it runs, wired once from its settings.

A service declares what it is (ServiceDefinition); the kit builds the pool, the NATS connection,
the outbox relay, the consumers, health checks and caller authentication around it, and starts and
stops them in the right order. The service's own code sees only the pieces it uses.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ...contracts.events import StreamSpec
from ..messaging.stopping import StopSignal
from ..observability.health import Check, Health
from ..observability.logs import get_logger
from ..observability.tracing import flush_tracing
from .callers import CallerAuthenticator
from .config import BaseServiceSettings, NatsSettings, PostgresSettings, RedisSettings

# The database and broker parts are imported where a service's settings ask for them: a service without a
# database or a broker (the API gateway) never loads psycopg2, nats-py or their dependencies.
if TYPE_CHECKING:
    import psycopg2.extensions

    from ..messaging.consumer import ConsumerGroup, Subscription
    from ..messaging.nats import NatsConnection
    from ..messaging.outbox import OutboxRelay
    from ..postgres.db import Database

log = get_logger(__name__)


@dataclass(frozen=True)
class ServiceDefinition:
    """What a service is; `build` adds its routes and subscriptions to a runtime."""

    name: str
    settings_class: type[BaseServiceSettings]
    build: Callable[[ServiceRuntime], ServiceParts]
    # The service's own schema migrations; by default the migrations/ folder beside its `build`, if any.
    migrations: Sequence[Path] | None = None
    publishes: Sequence[StreamSpec] = ()
    # "http": Flask behind gunicorn. "worker": one process running consumers (and gRPC, if the
    # parts register any), with /healthz and /metrics on a small HTTP side port.
    mode: Literal["http", "worker"] = "http"
    # A public service (the API gateway) authenticates end users itself; internal services demand
    # a caller identity on every non-operator request.
    public: bool = False
    # False where Redis only helps (the gateway's rate-limit counters): reported, not a reason to
    # leave load balancing.
    redis_critical: bool = True

    def ops_port(self, settings: BaseServiceSettings) -> int:
        """Where /healthz/* and /metrics answer: a worker's only HTTP port is PORT; an HTTP service moves
        them to ADMIN_PORT when it has one."""
        return settings.port if self.mode == "worker" else settings.admin_port or settings.port

    def migration_dirs(self) -> list[Path]:
        own = self.migrations
        if own is None:
            beside_build = Path(inspect.getfile(self.build)).parent / "migrations"
            own = (beside_build,) if beside_build.is_dir() else ()
        from ..postgres.db import KIT_MIGRATIONS

        return [KIT_MIGRATIONS, *own]


@dataclass
class ServiceParts:
    blueprints: list[Any] = field(default_factory=list)  # flask.Blueprint; kept untyped to keep Flask out
    subscriptions: list[Subscription] = field(default_factory=list)
    # Each adds its servicer to the grpc.Server and returns the full service name it registered.
    grpc_services: list[Callable[[Any], str]] = field(default_factory=list)
    # Each is called with the (public) Flask app once it exists: for extensions such as a rate limiter.
    app_setup: list[Callable[[Any], None]] = field(default_factory=list)


class ServiceRuntime:
    def __init__(self, definition: ServiceDefinition, settings: BaseServiceSettings) -> None:
        self.definition = definition
        self.settings = settings
        self.name = definition.name
        self.health = Health(definition.name)
        self.db: Database | None = None
        self.redis: Any = None  # redis.Redis when the service has RedisSettings
        self.nats: NatsConnection | None = None
        self.outbox: OutboxRelay | None = None
        self.consumers: ConsumerGroup | None = None
        # Raised at SIGTERM, before anything stops: work that can be redone waits through it and gives way at
        # once (see kit.messaging.stopping); a service's `build` hands it to its adapters.
        self.stopping = StopSignal()
        self.callers = (CallerAuthenticator.disabled() if definition.public or not settings.serves_internal_callers
                        else self._caller_authenticator(settings))
        self._on_stop: list[Callable[[], None]] = []

        if isinstance(settings, PostgresSettings):
            password = settings.database_password.get_secret_value() if settings.database_password else None
            from ..postgres.db import Database, build_dsn
            from ..postgres.unit_of_work import recorded_events

            # Kept here rather than imported per transaction: transaction() is on every request's path.
            self._recorded_events = recorded_events

            self.db = Database(
                build_dsn(settings.database_url, password),
                pool_size=settings.db_pool_size,
                connect_timeout=settings.db_connect_timeout,
                statement_timeout_ms=settings.db_statement_timeout_ms,
                application_name=definition.name,
            )
            self.health.add_readiness_check(Check("postgres", self.db.ping))
        if isinstance(settings, RedisSettings):
            import redis

            password = settings.redis_password.get_secret_value() if settings.redis_password else None
            self.redis = redis.Redis.from_url(
                settings.redis_url, password=password, socket_timeout=settings.redis_timeout,
                socket_connect_timeout=settings.redis_timeout, health_check_interval=30,
                decode_responses=True, client_name=definition.name,
            )
            self.health.add_readiness_check(Check("redis", self._ping_redis, critical=definition.redis_critical))
        if isinstance(settings, NatsSettings):
            from ..messaging.nats import NatsConnection

            self.nats = NatsConnection(settings.nats_url, client_name=definition.name, streams=definition.publishes)
            # The outbox keeps writes durable while the broker is away, so a broker outage degrades the
            # service (reported) instead of taking it out of load balancing.
            self.health.add_readiness_check(Check("nats", self.nats.check, critical=False))
            self.health.add_liveness_check(Check("nats_loop", self._thread_check(self.nats.is_alive)))
        if self.db is not None and self.nats is not None:
            assert isinstance(settings, NatsSettings)
            from ..messaging.outbox import OutboxRelay

            self.outbox = OutboxRelay(
                definition.name,
                self.db,
                self.nats,
                poll_interval=settings.outbox_poll_interval,
                batch_size=settings.outbox_batch_size,
                retention_hours=settings.outbox_retention_hours,
            )
            self.health.add_readiness_check(Check("outbox", self.outbox.stats, critical=False))
            self.health.add_liveness_check(Check("outbox_relay", self._thread_check(self.outbox.is_alive)))

    def _ping_redis(self) -> dict[str, Any]:
        self.redis.ping()
        return {"redis": self.redis.connection_pool.connection_kwargs.get("host")}

    @staticmethod
    def _caller_authenticator(settings: BaseServiceSettings) -> CallerAuthenticator:
        if settings.caller_auth == "disabled":
            return CallerAuthenticator.disabled()
        assert settings.trusted_callers_dir is not None  # enforced by load_settings
        return CallerAuthenticator.from_directory(settings.trusted_callers_dir, settings.allowed_caller_names,
                                                  unrestricted_callers=settings.unrestricted_caller_names)

    @staticmethod
    def _thread_check(is_alive: Callable[[], bool]) -> Callable[[], None]:
        def check() -> None:
            if not is_alive():
                raise RuntimeError("background thread has stopped")

        return check

    def add_subscriptions(self, subscriptions: list[Subscription]) -> None:
        if not subscriptions:
            return
        if self.nats is None:
            raise RuntimeError(f"{self.name} subscribes to events but has no NATS settings")
        assert isinstance(self.settings, NatsSettings)
        from ..messaging.consumer import ConsumerGroup

        self.consumers = ConsumerGroup(
            self.name, self.nats, subscriptions, max_in_flight=self.settings.consumer_max_in_flight,
            stopping=self.stopping,
        )
        self.health.add_liveness_check(Check("consumers", self._thread_check(self.consumers.is_alive)))

    def on_stop(self, close: Callable[[], None]) -> None:
        """Have `close` called on stop, after consumers and the outbox, before the pool is closed: for
        what a service's `build` opened itself (e.g. a ServiceClient). Called in reverse order."""
        self._on_stop.append(close)

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """A database transaction; if it commits having written events, the outbox relay is woken to publish
        them. Reads and writes without events leave the relay alone (its poll is the safety net)."""
        if self.db is None:
            raise RuntimeError(f"{self.name} has no database")
        with self.db.transaction() as cursor:
            yield cursor
        if self.outbox is not None and self._recorded_events(cursor):
            self.outbox.notify()

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        # The connection first: the relay and the consumers work on it.
        for part in (self.nats, self.outbox, self.consumers):
            if part is not None:
                part.start()
        self.health.mark_started()
        log.info("service_started")

    def request_stop(self) -> None:
        """The first step of a stop, taken as soon as SIGTERM arrives; returns at once. Readiness turns 503, the
        consumers stop fetching, and work that can be redone gives way (its message is redelivered). Not from a
        signal handler itself (it takes locks): from the thread that waits for the signal, or one started by it."""
        self.health.mark_stopping()
        self.stopping.request()
        if self.consumers is not None:
            self.consumers.begin_stop()

    def stop(self, timeout: float) -> None:
        """Graceful stop once HTTP has drained: finish messages, flush the outbox, close pools."""
        self.request_stop()
        budget = max(1.0, timeout)
        if self.consumers is not None:
            # Half for the consumers and half for the outbox drain; all of it when there is no outbox.
            self.consumers.stop(timeout=budget / 2 if self.outbox is not None else budget)
        if self.outbox is not None:
            self.outbox.stop_and_drain(timeout=budget / 2)
        if self.nats is not None:
            self.nats.close(timeout=5)
        for close in reversed(self._on_stop):
            try:
                close()
            except Exception as exc:  # one failing close must not keep the pool open
                log.warning("stop_callback_failed", error=str(exc) or type(exc).__name__)
        if self.db is not None:
            self.db.close()
        if self.redis is not None:
            self.redis.close()
        self.health.close()
        flush_tracing()  # the last spans are exported before the process goes
        log.info("service_stopped")
