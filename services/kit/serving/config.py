"""Typed service settings ("facts") from environment variables and mounted files.

Every setting NAME can be given as the environment variable NAME, or as NAME_FILE=/path whose
file content is the value (how Kubernetes/Docker mount secrets). Settings are validated once at
start-up; a wrong or missing one stops the process with one line naming it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ..core.pages import PageTokens


class ConfigurationError(SystemExit):
    """Raised (as a clean exit with status 2) when settings are wrong; the message names the setting."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _FileSettingsSource(EnvSettingsSource):
    """Reads NAME from the file named by NAME_FILE (secrets mounted as files)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        env_name = field_name.upper()
        path = os.environ.get(f"{env_name}_FILE")
        if not path:
            return None, field_name, False
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"configuration error: {env_name}_FILE: cannot read {path}: {exc.strerror}"
            ) from exc
        return value, field_name, False


def _url_with_scheme(*schemes: str, meaning: str, comma_separated: bool = False) -> AfterValidator:
    """A URL setting whose scheme must be one of `schemes`; the error says it `must be <meaning>`."""
    prefixes = tuple(f"{scheme}://" for scheme in schemes)

    def check(value: str) -> str:
        parts = value.split(",") if comma_separated else [value]
        if not all(part.strip().startswith(prefixes) for part in parts):
            raise ValueError(f"must be {meaning}")
        return value

    return AfterValidator(check)


PostgresUrl = Annotated[str, _url_with_scheme("postgresql", "postgres", meaning="a postgresql:// URL")]
NatsUrls = Annotated[str, _url_with_scheme("nats", "tls", meaning="a nats:// URL (comma-separated for a cluster)",
                                           comma_separated=True)]
RedisUrl = Annotated[str, _url_with_scheme("redis", "rediss", meaning="a redis:// or rediss:// URL")]


def _absolute_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


def _not_blank(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("must not be empty")
    return value


# The shortest secret a key of HMAC-SHA256 may be (kit/core/pages.py's PageTokens wants 32 bytes).
MIN_SIGNING_SECRET_LENGTH = 32


def _long_enough_to_sign(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value().strip()) < MIN_SIGNING_SECRET_LENGTH:
        raise ValueError(f"must be at least {MIN_SIGNING_SECRET_LENGTH} characters (e.g. `openssl rand -hex 32`)")
    return value


# Where a service this one calls listens, and a secret a service cannot work without (e.g. the caller token of a
# service that calls others).
ServiceUrl = Annotated[str, AfterValidator(_absolute_http_url)]
RequiredSecret = Annotated[SecretStr, AfterValidator(_not_blank)]
# The page-token secret of a service whose listings hand out page tokens (`next_token`, kit/core/pages.py). The
# catalogue says which services do (`signs_page_tokens`); each declares `page_token_secret: PageTokenSecret` and
# builds its tokens with `page_tokens(settings.page_token_secret)`. Required: there is no unsigned mode.
PageTokenSecret = Annotated[SecretStr, AfterValidator(_long_enough_to_sign), Field(description=(
    "Signs the `next_token` of the service's listings (HMAC-SHA256), so that only this service can make one; a "
    "token is also bound to its user and listing. Required: at least 32 characters, the same for every replica, "
    "best from a mounted file (`PAGE_TOKEN_SECRET_FILE`). Each service has its own: `delinkcious up` generates one "
    "per service in its data directory, docker-compose.yaml mounts `page-token-secret-<service>`, and the Helm "
    "chart mounts the service's key of the page-tokens Secret. Changing it invalidates the tokens in flight (their "
    "clients get `400` and start from the first page)."))]


def page_tokens(secret: SecretStr) -> PageTokens:
    """A service's page tokens, signed with its PAGE_TOKEN_SECRET."""
    return PageTokens(secret.get_secret_value().strip().encode())


class ProcessSettings(BaseSettings):
    """Settings of any of our processes: from the environment, NAME or NAME_FILE, validated once and frozen."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSettingsSource(settings_cls))

    def validate_caller_auth(self) -> None:
        """Checked by load_settings; only a service that serves callers has anything to check."""


class BaseServiceSettings(ProcessSettings):
    """Settings every service has. Services subclass it and add their own facts."""

    # False for a service no other service calls (a worker with no API): it has no caller to authenticate,
    # so it needs no TRUSTED_CALLERS_DIR or ALLOWED_CALLERS.
    serves_internal_callers: ClassVar[bool] = True

    service_name: str = Field(description=(
        "Which service this process runs. `delinkcious serve` and `delinkcious probe` take the service from this "
        "variable when no name is given on the command line (the container image sets it from its `SERVICE` build "
        "argument); a name given on the command line wins."))
    host: str = Field("127.0.0.1", description=(
        "Address the service's ports (HTTP, and gRPC where it has a gRPC port) bind to. Use `0.0.0.0` in a "
        "container."))
    # No default here: each service's class gives its own, from the catalogue (services/catalogue.py).
    port: int = Field(ge=1, le=65535, description=(
        "Port for the API, `/healthz/*` and `/metrics`. Each service's own default comes from the catalogue "
        "(`services/catalogue.py`) and is given in its section below."))
    admin_port: int | None = Field(None, ge=1, le=65535, description=(
        "When set, `/healthz/*` and `/metrics` are served only on this port and never on PORT, so an ingress can "
        "expose PORT alone (the API gateway does this). HTTP services only: a worker service serves them on PORT, "
        "so leave it unset there."))
    log_format: Literal["json", "console"] = Field("json", description=(
        "`console` gives human-readable lines for local work (see [logging](logging.md))."))
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description=(
        "Minimum level for the service's own lines and for gunicorn's. At `debug`, the `nats`, `urllib3` and "
        "`yoyo` loggers are shown too (they stay at `warning` otherwise)."))

    web_workers: int = Field(2, ge=1, le=64, description=(
        "gunicorn worker processes of an HTTP service (a worker service runs as one process). Each worker has its "
        "own pool, NATS connection, outbox relay and consumers."))
    web_threads: int = Field(8, ge=1, le=256, description=(
        "Threads per gunicorn worker (`gthread`) of an HTTP service."))
    graceful_timeout: float = Field(20.0, gt=0, le=600, description=(
        "Time allowed after SIGTERM for in-flight HTTP requests (in a worker service: gRPC calls) to finish. "
        "For an HTTP service it is one part of gunicorn's own graceful timeout, the time after which the gunicorn "
        "master kills any worker still running: `ceil(GRACEFUL_TIMEOUT + SHUTDOWN_DRAIN_TIMEOUT + 5)` seconds, "
        "35 s with the defaults (`services/kit/serving/gunicorn.py`). See "
        "[shutdown](health.md#start-up-and-shutdown)."))
    shutdown_drain_timeout: float = Field(10.0, gt=0, le=600, description=(
        "After in-flight requests have finished, each worker has this long to stop its consumers (the first half) "
        "and to drain the outbox (the second half; a service without an outbox gives all of it to its consumers). "
        "It then closes its NATS connection and its pools."))
    max_request_bytes: int = Field(64 * 1024, ge=1024, description=(
        "Largest request body accepted. A larger body gets `413 payload_too_large`."))
    startup_timeout: float = Field(60.0, gt=0, description=(
        "How long start-up waits for PostgreSQL to accept connections before migrations (services with a database "
        "only). If it does not in that time, the process logs `startup_failed` and exits with status 1 (see "
        "[validation at start-up](#validation-at-start-up))."))

    caller_auth: Literal["token", "disabled"] = Field("token", description=(
        "Caller identity on internal endpoints (see [caller identity](#caller-identity)): `token` checks every "
        "caller's token; `disabled` only where a service mesh authenticates callers (mTLS). The public API gateway "
        "checks no caller tokens, so it ignores this and the next three settings."))
    trusted_callers_dir: Path | None = Field(None, description=(
        "Directory holding one token file per trusted caller, named after the caller. Required when "
        "`CALLER_AUTH=token`. If set, it must be a directory."))
    allowed_callers: str = Field("", description=(
        "Comma-separated names of the callers this service serves. Required (at least one name) when "
        "`CALLER_AUTH=token`. Each endpoint admits only the ones its code grants it (see "
        "[caller identity](#caller-identity))."))
    unrestricted_callers: str = Field("", description=(
        "Comma-separated callers admitted to every endpoint, whatever the endpoint's own grants (see "
        "[caller identity](#caller-identity)). For a developer's tools only: `delinkcious up` sets it to "
        "`developer`; a deployment leaves it empty. Each name must also be in `ALLOWED_CALLERS`."))
    caller_token: SecretStr | None = Field(None, description=(
        "This service's own token, sent on its outgoing internal calls. Only services that make internal calls "
        "need it, and they require it (their sections below say so)."))

    @field_validator("log_format", "log_level", "caller_auth", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def allowed_caller_names(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.allowed_callers.split(",") if name.strip())

    @property
    def unrestricted_caller_names(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.unrestricted_callers.split(",") if name.strip())

    def validate_caller_auth(self) -> None:
        if not self.serves_internal_callers:
            return
        if self.caller_auth == "token" and self.trusted_callers_dir is None:
            raise ConfigurationError(
                "configuration error: TRUSTED_CALLERS_DIR: required when CALLER_AUTH=token "
                "(set CALLER_AUTH=disabled only behind a mesh that authenticates callers)"
            )
        if self.caller_auth == "token" and not self.allowed_caller_names:
            raise ConfigurationError(
                "configuration error: ALLOWED_CALLERS: required when CALLER_AUTH=token "
                "(comma-separated caller names, e.g. api-gateway)"
            )
        if self.caller_auth == "token" and not self.unrestricted_caller_names <= self.allowed_caller_names:
            stray = ", ".join(sorted(self.unrestricted_caller_names - self.allowed_caller_names))
            raise ConfigurationError(
                f"configuration error: UNRESTRICTED_CALLERS: {stray} not in ALLOWED_CALLERS"
            )
        if self.trusted_callers_dir is not None and not self.trusted_callers_dir.is_dir():
            raise ConfigurationError(
                f"configuration error: TRUSTED_CALLERS_DIR: {self.trusted_callers_dir} is not a directory"
            )


class PostgresSettings(BaseSettings):
    """Mixin for services that own a PostgreSQL database."""

    database_url: PostgresUrl = Field(description=(
        "The service's own database, a `postgresql://` or `postgres://` URL. Leave the password out of the URL."))
    database_password: SecretStr | None = Field(None, description=(
        "Password for the database. If set, it replaces any password in `DATABASE_URL`."))
    db_pool_size: int = Field(10, ge=1, le=200, description=(
        "Connections per **worker process**, opened when first needed and then kept open for reuse. A replica can "
        "hold up to `WEB_WORKERS × DB_POOL_SIZE` connections, plus one while migrating. A request that finds no free "
        "connection within 5 s gets `503 unavailable` (`Retry-After: 1`)."))
    db_connect_timeout: float = Field(3.0, gt=0, description=(
        "libpq connect timeout. It is truncated to whole seconds, with a minimum of 1."))
    db_statement_timeout_ms: int = Field(5000, ge=100, description=(
        "PostgreSQL `statement_timeout` for every connection in the pool."))


class NatsSettings(BaseSettings):
    """Mixin for services that publish or consume events."""

    nats_url: NatsUrls = Field(description=(
        "NATS JetStream server(s): a `nats://` or `tls://` URL, comma-separated for a cluster."))
    outbox_poll_interval: float = Field(1.0, gt=0, description=(
        "How often the outbox relay looks for unpublished events when no commit has woken it. Only services with "
        "a database have an outbox."))
    outbox_batch_size: int = Field(100, ge=1, le=1000, description=(
        "Events published per relay transaction (services with a database only)."))
    outbox_retention_hours: float = Field(24.0, gt=0, description=(
        "How long published outbox rows are kept before they are deleted (services with a database only). "
        "Consumed-event claims (`processed_events`) are always kept for 30 days."))
    consumer_max_in_flight: int = Field(16, ge=1, le=1000, description=(
        "Per worker: the most unacknowledged messages per subscription, and the number of handler threads. A slot "
        "is refilled as soon as its message is acked, so one slow message does not hold up the others."))


class RedisSettings(BaseSettings):
    """Mixin for services that keep state in Redis."""

    redis_url: RedisUrl = Field(description=(
        "The Redis server, a `redis://` or `rediss://` (TLS) URL, e.g. `redis://redis:6379/0`."))
    redis_password: SecretStr | None = Field(None, description=(
        "Password for Redis, used when `REDIS_URL` holds none (a password in the URL wins)."))
    redis_timeout: float = Field(2.0, gt=0, description=(
        "Timeout for connecting to Redis and for each command."))


class GrpcSettings(BaseSettings):
    """Mixin for services that serve gRPC (PORT then serves only /healthz and /metrics)."""

    grpc_port: int = Field(ge=1, le=65535, description=(
        "Port of the gRPC API, on HOST. Each service's own default comes from the catalogue and is given in its "
        "section below."))
    grpc_workers: int = Field(16, ge=1, le=256, description=(
        "Threads serving gRPC calls. At most four times as many calls are accepted at once; callers beyond that "
        "get `RESOURCE_EXHAUSTED` at once."))


SettingsT = TypeVar("SettingsT", bound=ProcessSettings)


def load_settings(settings_class: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build and validate settings, turning any problem into one line that names the setting."""
    try:
        settings = settings_class(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigurationError(f"configuration error: {problems}") from None
    settings.validate_caller_auth()
    return settings

