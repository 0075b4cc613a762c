"""Running services in-process against the suite's real servers."""
from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delinkcious.kit.postgres.db import Database, apply_migrations, build_dsn
from delinkcious.kit.serving.callers import CALLER_TOKEN_HEADER
from delinkcious.kit.serving.config import NatsSettings, PostgresSettings, RedisSettings, load_settings
from delinkcious.kit.serving.runtime import ServiceDefinition, ServiceRuntime
from delinkcious.kit.serving.web import create_app
from flask import Flask


def unique_username(prefix: str = "u") -> str:
    """Tests share servers; a fresh user per test keeps their data apart."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class ServiceEnvironment:
    postgres_admin_dsn: str
    nats_url: str
    secrets_dir: Path
    callers_dir: Path
    ensure_database: Callable[..., Any]
    redis_url: str | None = None
    _migrated: dict[str, Any] = field(default_factory=dict)
    _page_token_secrets: dict[str, str] = field(default_factory=dict)

    def page_token_secret(self, service: str) -> str:
        """The PAGE_TOKEN_SECRET this suite gives `service` (one per service, as a deployment has)."""
        return self._page_token_secrets.setdefault(service, secrets.token_urlsafe(32))

    def database(self, definition: ServiceDefinition, name: str | None = None) -> Any:
        """The service's own database (role + db), migrated; created once per name."""
        name = name or f"{definition.name}_test"
        if name not in self._migrated:
            access = self.ensure_database(self.postgres_admin_dsn, name, self.secrets_dir / "postgres")
            apply_migrations(access.dsn, definition.migration_dirs(), password=access.read_password())
            self._migrated[name] = access
        return self._migrated[name]

    @contextmanager
    def pool(self, definition: ServiceDefinition, **options: Any) -> Iterator[Database]:
        """A connection pool on the service's migrated database, as the service itself would have."""
        access = self.database(definition)
        database = Database(build_dsn(access.dsn, access.read_password()), **options)
        try:
            yield database
        finally:
            database.close()

    def settings(self, definition: ServiceDefinition, **overrides: Any) -> Any:
        """Settings wired to the suite's servers: only the stores this service's settings declare."""
        values: dict[str, Any] = {
            "service_name": definition.name,
            "trusted_callers_dir": self.callers_dir,
            "allowed_callers": "api-gateway",
        }
        if issubclass(definition.settings_class, NatsSettings):
            values.update(nats_url=self.nats_url, outbox_poll_interval=0.2)
        if issubclass(definition.settings_class, PostgresSettings):
            access = self.database(definition)
            values.update(database_url=access.dsn, database_password=access.read_password())
        if issubclass(definition.settings_class, RedisSettings):
            values["redis_url"] = self.redis_url
        if "page_token_secret" in definition.settings_class.model_fields:  # as `up` and the deployments give it
            values["page_token_secret"] = self.page_token_secret(definition.name)
        values.update(overrides)
        return load_settings(definition.settings_class, **values)

    def caller_headers(self, caller: str = "api-gateway") -> dict[str, str]:
        return {CALLER_TOKEN_HEADER: (self.callers_dir / caller).read_text().strip()}

    @contextmanager
    def running(self, definition: ServiceDefinition, **overrides: Any) -> Iterator[tuple[ServiceRuntime, Flask]]:
        """The service wired as in production (real pool, NATS, relay, consumers), served by Flask's
        test client instead of gunicorn."""
        runtime = ServiceRuntime(definition, self.settings(definition, **overrides))
        parts = definition.build(runtime)
        runtime.add_subscriptions(parts.subscriptions)
        app = create_app(runtime, parts.blueprints, setup=parts.app_setup)
        runtime.start()
        try:
            yield runtime, app
        finally:
            runtime.stop(timeout=10)
