"""Outgoing internal calls: caller identity and request id on every call, timeouts always, and
retries only for idempotent methods."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from delinkcious.kit.core.errors import Unavailable
from delinkcious.kit.observability.context import request_scope
from delinkcious.kit.serving.http_client import ServiceClient


class Recorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, dict[str, str]]] = []
    failures_left = 0
    delay = 0.0

    def _answer(self) -> None:
        Recorder.calls.append((self.command, dict(self.headers)))
        time.sleep(Recorder.delay)
        if Recorder.failures_left > 0:
            Recorder.failures_left -= 1
            self.send_response(503)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    Recorder.calls, Recorder.failures_left, Recorder.delay = [], 0, 0.0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_caller_token_and_request_id_are_sent(server):
    client = ServiceClient(server, caller_token="tok-123")
    with request_scope("rid-42"):
        assert client.request("GET", "/x").status_code == 200
    _method, headers = Recorder.calls[0]
    assert headers["Delinkcious-Caller-Token"] == "tok-123" and headers["X-Request-Id"] == "rid-42"


def test_idempotent_requests_are_retried(server):
    Recorder.failures_left = 2
    assert ServiceClient(server, caller_token="t").request("GET", "/x").status_code == 200
    assert len(Recorder.calls) == 3


def test_non_idempotent_requests_are_not_retried(server):
    Recorder.failures_left = 2
    assert ServiceClient(server, caller_token="t").request("POST", "/x").status_code == 503
    assert len(Recorder.calls) == 1


def test_slow_dependency_times_out_as_unavailable(server):
    Recorder.delay = 2.0
    client = ServiceClient(server, caller_token="t", read_timeout=0.3, retries=0)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        client.request("POST", "/x")
    assert time.monotonic() - started < 1.5


def test_unreachable_dependency_is_unavailable():
    with pytest.raises(Unavailable):
        ServiceClient("http://127.0.0.1:1", caller_token="t", retries=0).request("GET", "/x")
