"""Wiring of the link service: its settings, its adapters, and its definition for the kit."""
from __future__ import annotations

from pydantic import Field

from ..catalogue import get_service
from ..contracts.events import LINKS_STREAM
from ..kit.serving.config import BaseServiceSettings, NatsSettings, PostgresSettings
from ..kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from .events import subscriptions
from .http import links_blueprint
from .repository import PostgresUnitOfWork
from .service import LinkService

FACTS = get_service("link")


class LinkSettings(BaseServiceSettings, PostgresSettings, NatsSettings):
    port: int = Field(FACTS.port, ge=1, le=65535, description="Port for the API, `/healthz/*` and `/metrics`.")
    max_links_per_user: int = Field(10000, ge=1, description=(
        "A user's quota. Adding a link beyond it gets `409 quota_exceeded`."))


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, LinkSettings)
    service = LinkService(lambda: PostgresUnitOfWork(runtime.transaction),
                          max_links_per_user=settings.max_links_per_user)
    return ServiceParts(blueprints=[links_blueprint(service)], subscriptions=subscriptions(service))


DEFINITION = ServiceDefinition(name=FACTS.name, settings_class=LinkSettings, build=build, publishes=(LINKS_STREAM,))
