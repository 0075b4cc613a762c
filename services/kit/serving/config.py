"""Typed service settings ("facts") from environment variables and mounted files.

Every setting NAME can be given as the environment variable NAME, or as NAME_FILE=/path whose
file content is the value (how Kubernetes/Docker mount secrets). Settings are validated once at
start-up; a wrong or missing one stops the process with one line naming it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


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


class BaseServiceSettings(BaseSettings):
    """Settings every service has. Services subclass it and add their own facts."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)

    service_name: str
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # When set, /healthz/* and /metrics are served only on this port and never on PORT, so an
    # ingress can expose PORT alone (the API gateway does this).
    admin_port: int | None = Field(None, ge=1, le=65535)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    web_workers: int = Field(2, ge=1, le=64)
    web_threads: int = Field(8, ge=1, le=256)
    graceful_timeout: float = Field(20.0, gt=0, le=600)  # for in-flight HTTP requests after SIGTERM
    shutdown_drain_timeout: float = Field(10.0, gt=0, le=600)  # then for consumers and the outbox
    max_request_bytes: int = Field(64 * 1024, ge=1024)
    startup_timeout: float = Field(60.0, gt=0)

    # Caller identity for internal calls; "disabled" only where a mesh authenticates callers (mTLS).
    caller_auth: Literal["token", "disabled"] = "token"
    trusted_callers_dir: Path | None = None
    allowed_callers: str = ""
    caller_token: SecretStr | None = None

    @field_validator("log_format", "log_level", "caller_auth", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def allowed_caller_names(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.allowed_callers.split(",") if name.strip())

    def validate_caller_auth(self) -> None:
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
        if self.trusted_callers_dir is not None and not self.trusted_callers_dir.is_dir():
            raise ConfigurationError(
                f"configuration error: TRUSTED_CALLERS_DIR: {self.trusted_callers_dir} is not a directory"
            )

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


class PostgresSettings(BaseSettings):
    """Mixin for services that own a PostgreSQL database."""

    database_url: str
    database_password: SecretStr | None = None
    db_pool_size: int = Field(10, ge=1, le=200)
    db_connect_timeout: float = Field(3.0, gt=0)
    db_statement_timeout_ms: int = Field(5000, ge=100)

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value


class NatsSettings(BaseSettings):
    """Mixin for services that publish or consume events."""

    nats_url: str
    outbox_poll_interval: float = Field(1.0, gt=0)
    outbox_batch_size: int = Field(100, ge=1, le=1000)
    outbox_retention_hours: float = Field(24.0, gt=0)
    consumer_max_in_flight: int = Field(16, ge=1, le=1000)

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: str) -> str:
        if not all(part.strip().startswith(("nats://", "tls://")) for part in value.split(",")):
            raise ValueError("must be a nats:// URL (comma-separated for a cluster)")
        return value


class RedisSettings(BaseSettings):
    """Mixin for services that keep state in Redis."""

    redis_url: str
    redis_password: SecretStr | None = None
    redis_timeout: float = Field(2.0, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value


class GrpcSettings(BaseSettings):
    """Mixin for services that serve gRPC (PORT then serves only /healthz and /metrics)."""

    grpc_port: int = Field(9090, ge=1, le=65535)
    grpc_workers: int = Field(16, ge=1, le=256)


SettingsT = TypeVar("SettingsT", bound=BaseServiceSettings)


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

