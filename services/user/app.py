"""Wiring of the user service: its settings, its adapters, and its definition for the kit."""
from __future__ import annotations

from pathlib import Path

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
    port: int = Field(FACTS.port, ge=1, le=65535)
    access_token_ttl: int = Field(30 * 86400, ge=60)  # seconds; what a login gets by default
    max_access_token_ttl: int = Field(365 * 86400, ge=60)


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, UserSettings)
    service = UserService(lambda: PostgresUnitOfWork(runtime.transaction),
                          token_ttl_seconds=settings.access_token_ttl,
                          max_token_ttl_seconds=settings.max_access_token_ttl)
    return ServiceParts(blueprints=[users_blueprint(service)])


DEFINITION = ServiceDefinition(
    name=FACTS.name,
    settings_class=UserSettings,
    build=build,
    migrations=(Path(__file__).parent / "migrations",),
    publishes=(USERS_STREAM,),
)
