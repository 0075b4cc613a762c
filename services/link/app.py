"""Wiring of the link service: its settings, its adapters, and its definition for the kit."""
from __future__ import annotations

from pydantic import Field, SecretStr

from ..catalogue import get_service
from ..contracts.events import LINKS_STREAM
from ..kit.core.pages import PageTokens
from ..kit.observability.logs import get_logger
from ..kit.serving.config import BaseServiceSettings, NatsSettings, PostgresSettings
from ..kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from .events import subscriptions
from .http import links_blueprint
from .repository import PostgresUnitOfWork
from .service import LinkService

FACTS = get_service("link")
log = get_logger(__name__)


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
    page_token_secret: SecretStr | None = Field(None, min_length=32, description=(
        "Signs the `next_token` of the listings (HMAC-SHA256), so that only this service can make one: at "
        "least 32 characters, the same for every replica, best from a mounted file (`PAGE_TOKEN_SECRET_FILE`). "
        "Changing it invalidates the tokens in flight (their clients get `400` and start from the first page). "
        "Without it, tokens are still bound to their user and listing and their positions are checked, but "
        "anyone can make one (a warning is logged at start-up)."))


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, LinkSettings)
    filter_timeout_ms = min(settings.regex_filter_timeout_ms, settings.db_statement_timeout_ms)
    secret = settings.page_token_secret
    if secret is None:
        log.warning("page_tokens_unsigned", reason="PAGE_TOKEN_SECRET is not set: page tokens are bound to their "
                                                   "user and listing, but anyone can make one")
    service = LinkService(lambda: PostgresUnitOfWork(runtime.transaction, filter_timeout_ms=filter_timeout_ms),
                          max_links_per_user=settings.max_links_per_user,
                          page_tokens=PageTokens(secret.get_secret_value().encode() if secret else None))
    return ServiceParts(blueprints=[links_blueprint(service)], subscriptions=subscriptions(service))


DEFINITION = ServiceDefinition(name=FACTS.name, settings_class=LinkSettings, build=build, publishes=(LINKS_STREAM,))
