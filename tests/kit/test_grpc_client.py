"""Outgoing gRPC calls: the caller's identity and the request id on every call, a channel opened by the first
call in the process that makes it (not when the client is made, which may be before gunicorn forks)."""
from __future__ import annotations

import time
from concurrent import futures
from typing import Any

import grpc
import pytest
from delinkcious.kit.observability.context import request_scope
from delinkcious.kit.serving.grpc_client import GrpcClient
from delinkcious.local.servers import free_port
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class Channel:
    def __init__(self, address: str, options: Any) -> None:
        self.address = address
        self.options = dict(options)
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

    def insecure_channel(address: str, options: Any = ()) -> Channel:
        channels.append(Channel(address, options))
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


def test_a_server_that_comes_back_is_called_again_within_about_a_second():
    """gRPC's default reconnect backoff grows to 120 s while a server is away, and calls fail at once meanwhile:
    after a few seconds down it would already leave a restarted server uncalled for several seconds."""
    address = f"127.0.0.1:{free_port()}"
    client = GrpcClient(address, health_pb2_grpc.HealthStub, caller_token=None, timeout_s=1, retries=0)
    check = health_pb2.HealthCheckRequest()
    down_until = time.monotonic() + 6  # the server is away long enough for the default backoff to reach ~4 s
    while time.monotonic() < down_until:
        with pytest.raises(grpc.RpcError) as failed:
            client.call(lambda stub: stub.Check, check, idempotent=True)
        assert failed.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        time.sleep(0.2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(address)
    server.start()
    try:
        back = time.monotonic()
        while True:
            try:
                answer = client.call(lambda stub: stub.Check, check, idempotent=True)
                break
            except grpc.RpcError:
                assert time.monotonic() - back < 10, "never reconnected"
                time.sleep(0.05)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert time.monotonic() - back < 1.5
    finally:
        client.close()
        server.stop(0)
