"""The request context, in one module: where a request's id comes from and where it goes.

Every hop reads and writes it here: incoming HTTP (kit.serving.web) and gRPC (kit.serving.grpc_server)
requests, consumed NATS messages (kit.messaging.consumer); outgoing HTTP (kit.serving.http_client)
and gRPC (kit.serving.grpc_client) calls, and published events (the outbox row's headers, direct
publishing). The id itself lives in one context variable (kit.core.request_id), so log lines
(kit.observability.logs) and events created by use cases pick it up without being handed it.

The trace context (kit.observability.tracing, when tracing is on) travels the same hops: OpenTelemetry's
instrumentations carry it on HTTP and gRPC, and an event's headers carry it from the request that wrote the event
(stored on its outbox row) to whoever consumes it.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import Token
from typing import Any

from ..core.deadline import remaining, reset_deadline, set_deadline
from ..core.request_id import current_request_id, reset_request_id, set_request_id
from . import tracing

__all__ = [
    "REQUEST_ID_HEADER", "GRPC_REQUEST_ID_KEY", "accept_or_create_request_id", "current_request_id",
    "request_scope", "enter_request", "leave_request", "adopt_request_id", "outgoing_headers",
    "outgoing_grpc_metadata", "event_headers", "presented_in", "TIMEOUT_HEADER", "enter_deadline", "leave_deadline",
]

REQUEST_ID_HEADER = "X-Request-Id"  # HTTP requests and responses, and NATS message headers
GRPC_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower()  # gRPC metadata keys are lower case

# How many milliseconds the caller waits for the answer (its read timeout), on internal HTTP calls. gRPC carries
# its own deadline (grpc-timeout).
TIMEOUT_HEADER = "Delinkcious-Timeout-Ms"
_LONGEST_TIMEOUT_MS = 10 * 60 * 1000

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def accept_or_create_request_id(presented: str | None) -> str:
    """Keep a caller's id if it is sane (it ends up in logs and headers); otherwise make one."""
    if presented and _VALID_REQUEST_ID.match(presented):
        return presented
    return uuid.uuid4().hex


# --- incoming ----------------------------------------------------------------------------------
@contextmanager
def request_scope(presented: str | None) -> Iterator[str]:
    """Handle one request or message under the presented id (or a new one)."""
    request_id, token = enter_request(presented)
    try:
        yield request_id
    finally:
        leave_request(token)


def enter_request(presented: str | None) -> tuple[str, Token[str | None]]:
    """For frameworks that begin and end a request in separate hooks (Flask); pair with leave_request."""
    request_id = accept_or_create_request_id(presented)
    return request_id, set_request_id(request_id)


def leave_request(token: Token[str | None]) -> None:
    reset_request_id(token)


def enter_deadline(presented: str | None) -> Token[float | None]:
    """The caller's timeout from its TIMEOUT_HEADER (no deadline when it sent none, or nonsense); pair with
    leave_deadline."""
    try:
        milliseconds = int(presented) if presented else None
    except ValueError:
        milliseconds = None
    if milliseconds is not None and not 0 < milliseconds <= _LONGEST_TIMEOUT_MS:
        milliseconds = None
    return set_deadline(None if milliseconds is None else milliseconds / 1000)


def leave_deadline(token: Token[float | None]) -> None:
    reset_deadline(token)


def adopt_request_id(presented: str | None) -> None:
    """Take `presented` as the current id in a context that is thrown away afterwards (a copied
    context running one message's handler)."""
    set_request_id(accept_or_create_request_id(presented))


def presented_in(headers: Mapping[str, Any] | None) -> str | None:
    """The id an incoming HTTP request or NATS message carries, if any."""
    return (headers or {}).get(REQUEST_ID_HEADER)


# --- outgoing ----------------------------------------------------------------------------------
def outgoing_headers(timeout_s: float | None = None) -> dict[str, str]:
    """Headers that carry the current request on an HTTP call that waits `timeout_s` for its answer: the request
    id, and how long this caller waits (never longer than its own caller still waits)."""
    request_id = current_request_id()
    headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
    waits = [seconds for seconds in (timeout_s, remaining()) if seconds is not None]
    if waits:
        headers[TIMEOUT_HEADER] = str(max(1, int(min(waits) * 1000)))
    return headers


def outgoing_grpc_metadata() -> list[tuple[str, str]]:
    request_id = current_request_id()
    return [(GRPC_REQUEST_ID_KEY, request_id)] if request_id else []


def event_headers(event_id: str, request_id: str | None) -> dict[str, str]:
    """NATS headers of a published event: its id for JetStream's duplicate detection, the request that caused it,
    and (when tracing) the trace context it was created in, so its publishing and consuming join that trace."""
    headers = {"Nats-Msg-Id": event_id}
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    tracing.inject(headers)
    return headers
