"""Event envelope and stream catalogue: the contract every publisher and consumer shares.

Subjects are `delinkcious.<domain>.v<N>.<what-happened>`. A payload is a JSON object carrying its
event id, type, author, occurred-at time and everything a consumer needs without calling back.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..kit.core.clock import format_timestamp, parse_timestamp, utc_now


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_days: float = 7.0
    duplicate_window_s: float = 120.0  # JetStream drops a repeated Nats-Msg-Id within this window


LINKS_STREAM = StreamSpec("DELINKCIOUS_LINKS", ("delinkcious.links.v1.>",))
LINK_CHECKS_STREAM = StreamSpec("DELINKCIOUS_LINK_CHECKS", ("delinkcious.linkchecks.v1.>",))

LINK_ADDED = "delinkcious.links.v1.added"
LINK_UPDATED = "delinkcious.links.v1.updated"
LINK_DELETED = "delinkcious.links.v1.deleted"
LINK_CHECKED = "delinkcious.linkchecks.v1.checked"


class InvalidEvent(ValueError):
    """A message that can never be processed (malformed envelope or payload): it is not retried."""


# Namespace of derived event ids (uuid5); any fixed UUID would do, it must never change.
_DERIVED_EVENT_NAMESPACE = uuid.UUID("6f1c4a52-3f0e-4d7b-9a55-2f7c1f0e8d31")


def derived_event_id(source_event_id: str, producer: str) -> str:
    """The id of the event `producer` publishes in reaction to a consumed event: the same input
    always gives the same id, so a redelivered input republishes an event that JetStream's
    duplicate window drops and consumers' idempotency claims ignore."""
    return str(uuid.uuid5(_DERIVED_EVENT_NAMESPACE, f"{producer}:{source_event_id}"))


@dataclass(frozen=True)
class Event:
    subject: str
    event_type: str
    author: str
    data: dict[str, Any]
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=utc_now)
    request_id: str | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "author": self.author,
            "occurred_at": format_timestamp(self.occurred_at),
            "request_id": self.request_id,
            **self.data,
        }

    def encode(self) -> bytes:
        return json.dumps(self.payload(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, subject: str, raw: bytes) -> Event:
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise InvalidEvent("payload is not a JSON object")
            envelope = {key: payload.pop(key) for key in ("event_id", "event_type", "author", "occurred_at")}
            request_id = payload.pop("request_id", None)
            return cls(
                subject=subject,
                event_type=str(envelope["event_type"]),
                author=str(envelope["author"]),
                event_id=str(envelope["event_id"]),
                occurred_at=parse_timestamp(str(envelope["occurred_at"])),
                request_id=request_id,
                data=payload,
            )
        except InvalidEvent:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidEvent(f"malformed event on {subject}: {exc}") from exc


USERS_STREAM = StreamSpec("DELINKCIOUS_USERS", ("delinkcious.users.v1.>",))
SOCIAL_STREAM = StreamSpec("DELINKCIOUS_SOCIAL", ("delinkcious.social.v1.>",))

USER_CREATED = "delinkcious.users.v1.created"
FOLLOWED = "delinkcious.social.v1.followed"
UNFOLLOWED = "delinkcious.social.v1.unfollowed"
