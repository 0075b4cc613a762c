"""The NewsService gRPC servicer (contract: proto/delinkcious/api/news/v1/news.proto). Thin: the
kit's gRPC layer turns our errors into status codes and checks the caller's identity. Its one RPC has one
caller, the API gateway: the service's ALLOWED_CALLERS are the method's (no per-method grants needed)."""
from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ..contracts.events import LINK_EVENTS
from ..contracts.news.v1 import news_pb2, news_pb2_grpc
from ..kit.observability.logs import bind_contextvars
from .domain import FeedItem
from .service import NewsService

# The proto's enum names are the event type names in capitals (LINK_ADDED for link_added).
_EVENT_TYPES = {contract.event_type: news_pb2.EventType.Value(contract.event_type.upper()) for contract in LINK_EVENTS}


def event_message(item: FeedItem) -> news_pb2.Event:
    timestamp = Timestamp()
    timestamp.FromMilliseconds(item.occurred_ms)
    return news_pb2.Event(event_type=_EVENT_TYPES[item.event_type], username=item.author, url=item.url,
                          title=item.title, timestamp=timestamp, event_id=item.event_id)


class NewsServicer(news_pb2_grpc.NewsServiceServicer):
    def __init__(self, service: NewsService) -> None:
        self._service = service

    def GetNews(self, request: news_pb2.GetNewsRequest, context: grpc.ServicerContext) -> news_pb2.GetNewsResponse:
        bind_contextvars(user=request.username)
        items, next_token = self._service.get_news(request.username, request.start_token, request.limit)
        return news_pb2.GetNewsResponse(events=[event_message(item) for item in items], next_token=next_token)


def registration(service: NewsService) -> Any:
    """Adds the servicer to a grpc.Server; returns the full service name (for health and reflection)."""

    def register(server: grpc.Server) -> str:
        news_pb2_grpc.add_NewsServiceServicer_to_server(NewsServicer(service), server)
        return news_pb2.DESCRIPTOR.services_by_name["NewsService"].full_name

    return register
