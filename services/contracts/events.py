"""The events: the contract every publisher and consumer shares, each event written once here.

Subjects are `delinkcious.<domain>.v<N>.<what-happened>`. On the wire an event is an envelope (`Event`:
event id, type, author, occurred-at time, request id) around a payload carrying everything a consumer
needs without calling back. Each event is a typed payload class below (`LinkAdded`, `Followed`...)
that names its stream, subject and type name once; producers build it and call `to_event`,
consumers get it back with `from_event`, which refuses a malformed payload with InvalidInput naming
the field (the consumer then terminates the message instead of retrying it forever).

Plain Python on the kit's core: use cases create these events.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

from ..kit.core.clock import format_timestamp, parse_timestamp, utc_now
from ..kit.core.errors import InvalidInput
from ..kit.core.request_id import current_request_id


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_days: float = 7.0
    duplicate_window_s: float = 120.0  # JetStream drops a repeated Nats-Msg-Id within this window


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
    # The request that caused the event, from the request context unless given.
    request_id: str | None = field(default_factory=current_request_id)

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




# --- streams ------------------------------------------------------------------------------------
def _stream(name: str, domain: str) -> StreamSpec:
    return StreamSpec(f"DELINKCIOUS_{name}", (f"delinkcious.{domain}.v1.>",))


LINKS_STREAM = _stream("LINKS", "links")
LINK_CHECKS_STREAM = _stream("LINK_CHECKS", "linkchecks")
USERS_STREAM = _stream("USERS", "users")
SOCIAL_STREAM = _stream("SOCIAL", "social")


def _subject(stream: StreamSpec, what_happened: str) -> str:
    return stream.subjects[0].removesuffix(">") + what_happened


# --- typed payloads -----------------------------------------------------------------------------
ContractT = TypeVar("ContractT", bound="EventContract")


class EventContract:
    """Base of the typed payloads (frozen dataclasses). A subclass names its stream, subject and
    event type; its fields are the payload. Timestamps travel as RFC 3339 strings, tuples as lists."""

    stream: ClassVar[StreamSpec]
    subject: ClassVar[str]
    event_type: ClassVar[str]

    def __init_subclass__(cls, *, what_happened: str | None = None, event_type: str | None = None,
                          **kwargs: Any) -> None:
        """`class LinkAdded(LinkEvent, what_happened="added", event_type="link_added")` names an event:
        its subject is its stream's prefix and `what_happened`."""
        super().__init_subclass__(**kwargs)
        if what_happened is not None:
            cls.subject = _subject(cls.stream, what_happened)
        if event_type is not None:
            cls.event_type = event_type

    def to_event(self, *, author: str, occurred_at: datetime | None = None, event_id: str | None = None,
                 request_id: str | None = None) -> Event:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        data = {item.name: _to_wire(getattr(self, item.name)) for item in fields}
        envelope: dict[str, Any] = {"occurred_at": occurred_at, "event_id": event_id, "request_id": request_id}
        return Event(subject=self.subject, event_type=self.event_type, author=author, data=data,
                     **{name: value for name, value in envelope.items() if value is not None})

    @classmethod
    def from_event(cls: type[ContractT], event: Event) -> ContractT:
        if event.event_type != cls.event_type:
            raise InvalidInput("event_type", f"expected {cls.event_type}, got {event.event_type}")
        return cls.from_payload(event.data)

    @classmethod
    def from_payload(cls: type[ContractT], data: dict[str, Any]) -> ContractT:
        """The payload fields of an envelope's `data`; unknown fields are ignored (newer producers)."""
        values = {}
        for item, hint in _payload_fields(cls):
            if item.name in data:
                values[item.name] = _from_wire(data[item.name], hint, item.name)
            elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                raise InvalidInput(item.name, "is required")
        return cls(**values)


@functools.cache
def _payload_fields(contract: type[EventContract]) -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    """Each payload field with its resolved type. Cached: resolving the annotations (typing.get_type_hints)
    costs more than parsing a whole payload, and every consumed event would pay it."""
    hints = typing.get_type_hints(contract)
    return tuple((item, hints[item.name]) for item in dataclasses.fields(contract))  # type: ignore[arg-type]


@dataclass(frozen=True)
class LinkEvent(EventContract):
    """A user's saved link changed; `username` is its owner (also the event's author)."""

    stream: ClassVar[StreamSpec] = LINKS_STREAM
    url: str
    # The link service always sends every field; defaults let a consumer that needs fewer (the checker)
    # accept older or partial payloads. A consumer that needs a field checks for it (news: the title).
    title: str = ""
    username: str | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    link_created_at: datetime | None = None
    link_updated_at: datetime | None = None


class LinkAdded(LinkEvent, what_happened="added", event_type="link_added"):
    """A user saved a new link."""


class LinkUpdated(LinkEvent, what_happened="updated", event_type="link_updated"):
    """A user changed a saved link's title, description or tags."""


class LinkDeleted(LinkEvent, what_happened="deleted", event_type="link_deleted"):
    """A user deleted a saved link."""


LINK_EVENTS: tuple[type[LinkEvent], ...] = (LinkAdded, LinkUpdated, LinkDeleted)


@dataclass(frozen=True)
class LinkChecked(EventContract, what_happened="checked", event_type="link_checked"):
    """What the link checker concluded about one owner's link (author: the checker)."""

    stream: ClassVar[StreamSpec] = LINK_CHECKS_STREAM
    username: str
    url: str
    status: Literal["valid", "invalid"]
    checked_at: datetime
    http_status: int | None = None
    reason: str | None = None
    # The checked link's created_at, echoed from the event that asked for the check.
    link_created_at: datetime | None = None


@dataclass(frozen=True)
class LinkCheckInconclusive(EventContract, what_happened="inconclusive", event_type="link_check_inconclusive"):
    """An attempt of the link checker at one owner's link that reached no verdict (a timeout, a refused connection,
    a resolver failure, 429, 5xx ...): the link keeps its last conclusive status, and records the attempt. Not a
    `LinkChecked` with a third status: that event sets the link's status, this one never does, and a consumer of
    verdicts need not know it (author: the checker)."""

    stream: ClassVar[StreamSpec] = LINK_CHECKS_STREAM
    username: str
    url: str
    attempted_at: datetime
    reason: str  # short human text: "HTTP 503", "timed out: no answer within 10 s"
    failure: str  # the kind of failure, the checker's label: timeout, connection, network, dns, tls, http_5xx ...
    attempts: int  # this check's attempts so far, all inconclusive (1: the first)
    # When the next attempt is due; None when the checker gave the check up (`given_up`).
    next_attempt_at: datetime | None = None
    given_up: bool = False
    http_status: int | None = None
    # The checked link's created_at, echoed from the event that asked for the check (as in LinkChecked).
    link_created_at: datetime | None = None


@dataclass(frozen=True)
class UserCreated(EventContract, what_happened="created", event_type="user_created"):
    """A user signed in for the first time. No email: others need to know the user exists, not how
    to reach them."""

    stream: ClassVar[StreamSpec] = USERS_STREAM
    username: str
    name: str | None = None


@dataclass(frozen=True)
class FollowEvent(EventContract):
    stream: ClassVar[StreamSpec] = SOCIAL_STREAM
    follower: str
    followed: str


class Followed(FollowEvent, what_happened="followed", event_type="followed"):
    """`follower` now follows `followed`."""


class Unfollowed(FollowEvent, what_happened="unfollowed", event_type="unfollowed"):
    """`follower` no longer follows `followed`."""


# Subject names for publishers and tests that address JetStream directly.
LINK_ADDED, LINK_UPDATED, LINK_DELETED = (contract.subject for contract in LINK_EVENTS)
LINK_CHECKED = LinkChecked.subject
LINK_CHECK_INCONCLUSIVE = LinkCheckInconclusive.subject
USER_CREATED = UserCreated.subject
FOLLOWED, UNFOLLOWED = Followed.subject, Unfollowed.subject


# --- the wire form of payload fields ----------------------------------------------------------------
def _to_wire(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, tuple):
        return [_to_wire(item) for item in value]
    return value


def _from_wire(value: Any, annotation: Any, name: str) -> Any:
    """`value` as the annotated type (str, int, bool, datetime, tuple[str, ...], Literal, X | None)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        options = [option for option in typing.get_args(annotation) if option is not type(None)]
        return None if value is None else _from_wire(value, options[0], name)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value not in typing.get_args(annotation):
            raise InvalidInput(name, f"must be one of {sorted(typing.get_args(annotation))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise InvalidInput(name, "must be a list")
        return tuple(_from_wire(item, typing.get_args(annotation)[0], name) for item in value)
    if annotation is datetime:
        try:
            return parse_timestamp(str(value))
        except ValueError:
            raise InvalidInput(name, "must be an RFC 3339 timestamp") from None
    if annotation is int and isinstance(value, bool) or not isinstance(value, annotation):
        raise InvalidInput(name, f"must be {'an integer' if annotation is int else 'a ' + annotation.__name__}")
    return value
