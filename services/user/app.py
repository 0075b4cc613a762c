"""Wiring of the user service: its settings, its adapters, and its definition for the kit."""
from __future__ import annotations

from pydantic import Field

from ..catalogue import get_service
from ..contracts.events import USERS_STREAM
from ..kit.serving.config import BaseServiceSettings, NatsSettings, PostgresSettings
from ..kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from .http import users_blueprint
from .repository import PostgresUnitOfWork
from .service import UserService

FACTS = get_service("user")


class UserSettings(BaseServiceSettings, PostgresSettings, NatsSettings):
    port: int = Field(FACTS.port, ge=1, le=65535, description="Port for the API, `/healthz/*` and `/metrics`.")
    access_token_ttl: int = Field(30 * 86400, ge=60, description=(
        "Lifetime of an access token issued without `ttl_seconds` (a login gets this one); 30 days by default."))
    max_access_token_ttl: int = Field(365 * 86400, ge=60, description=(
        "The longest lifetime a caller may ask for with `ttl_seconds` (at least 60 s); 365 days by default."))


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, UserSettings)
    service = UserService(lambda: PostgresUnitOfWork(runtime.transaction),
                          token_ttl_seconds=settings.access_token_ttl,
                          max_token_ttl_seconds=settings.max_access_token_ttl)
    return ServiceParts(blueprints=[users_blueprint(service)])


DEFINITION = ServiceDefinition(name=FACTS.name, settings_class=UserSettings, build=build, publishes=(USERS_STREAM,))
