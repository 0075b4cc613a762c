"""Where the id of the request being handled is kept: one context variable, so every thread, asyncio
task and gRPC call sees its own. Plain Python, so an event a use case creates carries the id of the
request that caused it without the use case passing it around. kit.observability.context is the one
module that reads it from incoming requests and messages and writes it on outgoing ones."""
from __future__ import annotations

from contextvars import ContextVar, Token

_REQUEST_ID: ContextVar[str | None] = ContextVar("delinkcious_request_id", default=None)


def current_request_id() -> str | None:
    return _REQUEST_ID.get()


def set_request_id(request_id: str | None) -> Token[str | None]:
    return _REQUEST_ID.set(request_id)


def reset_request_id(token: Token[str | None]) -> None:
    _REQUEST_ID.reset(token)
