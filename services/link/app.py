"""Wiring of the link service: its settings, its adapters, and its definition for the kit."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..catalogue import get_service
from ..contracts.events import LINK_CHECKED, LINK_CHECKS_STREAM, LINKS_STREAM, Event
from ..kit.core.clock import parse_timestamp
from ..kit.core.errors import InvalidInput
from ..kit.core.validation import validate_username
from ..kit.messaging.consumer import Subscription
from ..kit.serving.config import BaseServiceSettings, NatsSettings, PostgresSettings
from ..kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from .domain import CHECK_STATUSES, CheckResult, validate_url
from .http import links_blueprint
from .repository import PostgresUnitOfWork
from .service import CHECK_RESULTS_CONSUMER, LinkService

FACTS = get_service("link")

class LinkSettings(BaseServiceSettings, PostgresSettings, NatsSettings):
    port: int = Field(FACTS.port, ge=1, le=65535)
    max_links_per_user: int = Field(10000, ge=1)


def check_result_from_event(event: Event) -> CheckResult:
    """The link-checked event (published by the link checker) as a domain value."""
    data = event.data
    status = data.get("status")
    if status not in CHECK_STATUSES:
        raise InvalidInput("status", f"must be one of {sorted(CHECK_STATUSES)}")
    http_status = data.get("http_status")
    if http_status is not None and not isinstance(http_status, int):
        raise InvalidInput("http_status", "must be an integer")
    try:
        checked_at = parse_timestamp(str(data.get("checked_at") or ""))
    except ValueError:
        raise InvalidInput("checked_at", "must be an RFC 3339 timestamp") from None
    reason = data.get("reason")
    link_created_at = data.get("link_created_at")
    if link_created_at is not None:
        try:
            link_created_at = parse_timestamp(str(link_created_at))
        except ValueError:
            raise InvalidInput("link_created_at", "must be an RFC 3339 timestamp") from None
    return CheckResult(
        username=validate_username(data.get("username")),
        url=validate_url(data.get("url")),
        status=status,
        checked_at=checked_at,
        http_status=http_status,
        reason=str(reason)[:500] if reason is not None else None,
        link_created_at=link_created_at,
    )


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, LinkSettings)
    service = LinkService(lambda: PostgresUnitOfWork(runtime.transaction), max_links_per_user=settings.max_links_per_user)

    def on_link_checked(event: Event) -> bool:
        return service.apply_check_result(event.event_id, check_result_from_event(event))

    return ServiceParts(
        blueprints=[links_blueprint(service)],
        subscriptions=[Subscription(LINK_CHECKS_STREAM, (LINK_CHECKED,), durable=CHECK_RESULTS_CONSUMER,
                                    handler=on_link_checked)],
    )


DEFINITION = ServiceDefinition(
    name=FACTS.name,
    settings_class=LinkSettings,
    build=build,
    migrations=(Path(__file__).parent / "migrations",),
    publishes=(LINKS_STREAM,),
)
