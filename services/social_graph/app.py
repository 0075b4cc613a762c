"""Wiring of the social-graph service: its settings, its adapters, and its definition for the kit."""
from __future__ import annotations

from pydantic import Field

from ..catalogue import get_service
from ..contracts.events import SOCIAL_STREAM
from ..kit.serving.config import (
    BaseServiceSettings,
    NatsSettings,
    PageTokenSecret,
    PostgresSettings,
    RequiredSecret,
    ServiceUrl,
    page_tokens,
)
from ..kit.serving.http_client import ServiceClient
from ..kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from .events import subscriptions
from .http import social_graph_blueprint
from .repository import PostgresUnitOfWork
from .service import SocialGraphService
from .user_directory import UserServiceDirectory

FACTS = get_service("social-graph")


class SocialGraphSettings(BaseServiceSettings, PostgresSettings, NatsSettings):
    port: int = Field(FACTS.port, ge=1, le=65535, description="Port for the API, `/healthz/*` and `/metrics`.")
    user_service_url: ServiceUrl = Field(description=(
        "The user service, an absolute `http://` or `https://` URL. It is asked whether a user exists when the "
        "local projection does not know them yet (see [its README](../services/social_graph/README.md"
        "#how-it-knows-users-exist))."))
    caller_token: RequiredSecret = Field(description=(
        "As for every service, but required here and not empty: social-graph calls the user service, which wants "
        "to know who is calling."))
    page_token_secret: PageTokenSecret


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, SocialGraphSettings)
    user_service = ServiceClient(settings.user_service_url, caller_token=settings.caller_token.get_secret_value())
    runtime.on_stop(user_service.close)
    service = SocialGraphService(lambda: PostgresUnitOfWork(runtime.transaction), UserServiceDirectory(user_service),
                                 page_tokens=page_tokens(settings.page_token_secret))
    return ServiceParts(blueprints=[social_graph_blueprint(service)], subscriptions=subscriptions(service))


DEFINITION = ServiceDefinition(name=FACTS.name, settings_class=SocialGraphSettings, build=build,
                               publishes=(SOCIAL_STREAM,))
