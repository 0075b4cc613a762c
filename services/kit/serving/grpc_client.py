"""Outgoing gRPC calls: the caller's identity, the request id and a deadline on every call, and a
retry only for idempotent calls that found the server unavailable (nothing was processed)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..observability.context import outgoing_grpc_metadata
from .callers import CALLER_TOKEN_HEADER

StubT = TypeVar("StubT")


def _unavailable(error: BaseException) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


class GrpcClient:
    def __init__(self, address: str, *, caller_token: str | None, timeout_s: float, retries: int = 1) -> None:
        self._channel = grpc.insecure_channel(address)
        self._identity = [(CALLER_TOKEN_HEADER.lower(), caller_token)] if caller_token else []
        self._timeout_s = timeout_s
        self._retries = retries

    def stub(self, stub_class: Callable[[grpc.Channel], StubT]) -> StubT:
        return stub_class(self._channel)

    def call(self, method: Callable[..., Any], request: Any, *, idempotent: bool) -> Any:
        """`method(request)` with metadata and deadline; grpc.RpcError when it fails for good."""
        metadata = [*self._identity, *outgoing_grpc_metadata()]
        retrying = Retrying(stop=stop_after_attempt(1 + (self._retries if idempotent else 0)),
                            retry=retry_if_exception(_unavailable), wait=wait_exponential(multiplier=0.05, max=0.5),
                            reraise=True)
        for attempt in retrying:
            with attempt:
                return method(request, metadata=metadata, timeout=self._timeout_s)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def close(self) -> None:
        self._channel.close()
