"""Outgoing gRPC calls: the caller's identity, the request id and a deadline on every call, and a
retry only for idempotent calls that found the server unavailable (nothing was processed).

The channel is opened by the first call, not when the client is made: a service may be built in the gunicorn
master before it forks its workers (kit/serving/gunicorn.py), and gRPC supports fork only in limited ways (its
advice is to create channels after forking), so each worker opens its own."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..observability.context import outgoing_grpc_metadata
from .callers import CALLER_TOKEN_HEADER

StubT = TypeVar("StubT")

# gRPC reconnects a channel whose server went away with an exponential backoff of up to 120 s by default, and
# fails every call at once meanwhile: a server that is back would not be called for up to two minutes. Attempts
# twice a second keep a dependency's recovery as fast as the dependency (the callers' circuit breakers
# already keep calls from piling up on a server that is down).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 500),
)


def _unavailable(error: BaseException) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


class GrpcClient(Generic[StubT]):
    def __init__(self, address: str, stub_class: Callable[[grpc.Channel], StubT], *, caller_token: str | None,
                 timeout_s: float, retries: int = 1) -> None:
        self._address = address
        self._stub_class = stub_class
        self._identity = [(CALLER_TOKEN_HEADER.lower(), caller_token)] if caller_token else []
        self._timeout_s = timeout_s
        self._retries = retries
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stub: StubT | None = None

    def call(self, method: Callable[[StubT], Callable[..., Any]], request: Any, *, idempotent: bool) -> Any:
        """`method(stub)(request)` with metadata and deadline, e.g. `call(lambda stub: stub.GetNews, request, ...)`;
        grpc.RpcError when it fails for good."""
        bound = method(self._connected_stub())
        metadata = [*self._identity, *outgoing_grpc_metadata()]
        retrying = Retrying(stop=stop_after_attempt(1 + (self._retries if idempotent else 0)),
                            retry=retry_if_exception(_unavailable), wait=wait_exponential(multiplier=0.05, max=0.5),
                            reraise=True)
        for attempt in retrying:
            with attempt:
                return bound(request, metadata=metadata, timeout=self._timeout_s)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _connected_stub(self) -> StubT:
        stub = self._stub
        if stub is None:
            with self._lock:
                if self._stub is None:
                    self._channel = grpc.insecure_channel(self._address, options=CHANNEL_OPTIONS)
                    self._stub = self._stub_class(self._channel)
                stub = self._stub
        return stub

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()  # later calls fail, as on any closed channel
