"""Outgoing gRPC calls: the caller's identity and the request id on every call, a channel opened by the first
call in the process that makes it (not when the client is made, which may be before gunicorn forks)."""
from __future__ import annotations

from typing import Any

import grpc
import pytest
from delinkcious.kit.observability.context import request_scope
from delinkcious.kit.serving.grpc_client import GrpcClient


class Channel:
    def __init__(self, address: str) -> None:
        self.address = address
        self.closed = False

    def close(self) -> None:
        self.closed = True


class EchoStub:
    """Answers what it was called with, as a generated stub's method would send it."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def Echo(self, request: Any, *, metadata: list[tuple[str, str]], timeout: float) -> dict[str, Any]:
        return {"request": request, "metadata": dict(metadata), "timeout": timeout, "channel": self.channel}


@pytest.fixture
def opened(monkeypatch) -> list[Channel]:
    channels: list[Channel] = []

    def insecure_channel(address: str) -> Channel:
        channels.append(Channel(address))
        return channels[-1]

    monkeypatch.setattr(grpc, "insecure_channel", insecure_channel)
    return channels


def test_the_channel_is_opened_by_the_first_call_and_then_reused(opened):
    client = GrpcClient("news:9084", EchoStub, caller_token="tok-1", timeout_s=1.5)
    assert opened == []
    with request_scope("rid-7"):
        first = client.call(lambda stub: stub.Echo, "hello", idempotent=True)
    second = client.call(lambda stub: stub.Echo, "again", idempotent=False)
    assert [channel.address for channel in opened] == ["news:9084"]
    assert first["channel"] is second["channel"] is opened[0]
    assert first["request"] == "hello" and first["timeout"] == 1.5
    assert first["metadata"]["delinkcious-caller-token"] == "tok-1" and "rid-7" in first["metadata"].values()
    client.close()
    assert opened[0].closed


def test_a_client_never_called_opens_nothing(opened):
    GrpcClient("news:9084", EchoStub, caller_token=None, timeout_s=1).close()
    assert opened == []
