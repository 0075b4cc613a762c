# Generated from proto/ by proto/generate.py: do not edit.
import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    LINK_ADDED: _ClassVar[EventType]
    LINK_UPDATED: _ClassVar[EventType]
    LINK_DELETED: _ClassVar[EventType]
EVENT_TYPE_UNSPECIFIED: EventType
LINK_ADDED: EventType
LINK_UPDATED: EventType
LINK_DELETED: EventType

class GetNewsRequest(_message.Message):
    __slots__ = ("username", "start_token", "limit")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    START_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    username: str
    start_token: str
    limit: int
    def __init__(self, username: _Optional[str] = ..., start_token: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class GetNewsResponse(_message.Message):
    __slots__ = ("events", "next_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    next_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_type", "username", "url", "title", "timestamp", "event_id")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_type: EventType
    username: str
    url: str
    title: str
    timestamp: _timestamp_pb2.Timestamp
    event_id: str
    def __init__(self, event_type: _Optional[_Union[EventType, str]] = ..., username: _Optional[str] = ..., url: _Optional[str] = ..., title: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_id: _Optional[str] = ...) -> None: ...
