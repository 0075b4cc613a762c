"""Wiring of the link service: its settings, its adapters, and its definition for the kit."""
from __future__ import annotations

from pydantic import Field

from ..catalogue import get_service
from ..contracts.events import LINKS_STREAM
from ..kit.serving.config import BaseServiceSettings, NatsSettings, PageTokenSecret, PostgresSettings, page_tokens
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
    regex_filter_timeout_ms: int = Field(1000, ge=10, le=60000, description=(
        "What PostgreSQL may spend on one listing with regex filters (`url_regex`, `title_regex`, "
        "`description_regex`): compiling the expressions and matching them, together, under `SET LOCAL "
        "statement_timeout`. Past it the client gets `400 filter_too_costly`, which nobody retries. Keep it well "
        "under the gateway's `DOWNSTREAM_TIMEOUT` (3 s), so the answer comes before the gateway gives up and "
        "retries; `DB_STATEMENT_TIMEOUT_MS` caps it."))
    page_token_secret: PageTokenSecret


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, LinkSettings)
    filter_timeout_ms = min(settings.regex_filter_timeout_ms, settings.db_statement_timeout_ms)
    service = LinkService(lambda: PostgresUnitOfWork(runtime.transaction, filter_timeout_ms=filter_timeout_ms),
                          max_links_per_user=settings.max_links_per_user,
                          page_tokens=page_tokens(settings.page_token_secret))
    return ServiceParts(blueprints=[links_blueprint(service)], subscriptions=subscriptions(service))


DEFINITION = ServiceDefinition(name=FACTS.name, settings_class=LinkSettings, build=build, publishes=(LINKS_STREAM,))
