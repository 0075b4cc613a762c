"""The social-graph service's event entry point: it consumes user-created events to learn which users
exist (see README.md, "How it knows users exist")."""
from __future__ import annotations

from ..contracts.events import Event, UserCreated
from ..kit.core.validation import validate_username
from ..kit.messaging.consumer import Subscription
from .service import KNOWN_USERS_CONSUMER, SocialGraphService


def subscriptions(service: SocialGraphService) -> list[Subscription]:
    def on_user_created(event: Event) -> bool:
        # An invalid username raises InvalidInput: the kit terminates the message instead of retrying it.
        username = validate_username(UserCreated.from_event(event).username)
        return service.record_user_created(event.event_id, username, event.occurred_at)

    return [Subscription.to(UserCreated, durable=KNOWN_USERS_CONSUMER, handler=on_user_created)]
