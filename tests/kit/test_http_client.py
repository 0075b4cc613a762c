"""Outgoing internal calls: caller identity and request id on every call, timeouts always, and
retries only for idempotent methods, except one resend of any request whose reused keep-alive connection
the server closed before answering."""
from __future__ import annotations

import contextlib
import json
import select
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from delinkcious.kit.core.errors import Unavailable
from delinkcious.kit.observability.context import request_scope
from delinkcious.kit.serving.http_client import ServiceClient


class Recorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, dict[str, str]]] = []
    failures_left = 0
    delay = 0.0
    retry_after: str | None = None

    def _answer(self) -> None:
        Recorder.calls.append((self.command, dict(self.headers)))
        time.sleep(Recorder.delay)
        if Recorder.failures_left > 0:
            Recorder.failures_left -= 1
            self.send_response(503)
            if Recorder.retry_after is not None:
                self.send_header("Retry-After", Recorder.retry_after)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on a free loopback port with `handler`; its base URL, shut down afterwards."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server():
    Recorder.calls, Recorder.failures_left, Recorder.delay, Recorder.retry_after = [], 0, 0.0, None
    with serving(Recorder) as url:
        yield url


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


def test_a_retry_does_not_wait_for_the_retry_after_the_service_gave_its_own_clients(server):
    # Our services answer 503 with `Retry-After: 5` (advice for end clients). An internal read retried after that
    # long would outlast the caller's own timeout: the retry comes after the client's short backoff instead.
    Recorder.failures_left, Recorder.retry_after = 1, "5"
    started = time.monotonic()
    assert ServiceClient(server, caller_token="t", retries=1).request("GET", "/x").status_code == 200
    assert len(Recorder.calls) == 2 and time.monotonic() - started < 2


def test_non_idempotent_requests_are_not_retried(server):
    Recorder.failures_left = 2
    assert ServiceClient(server, caller_token="t").request("POST", "/x").status_code == 503
    assert len(Recorder.calls) == 1


def test_a_read_that_timed_out_is_not_sent_again(server):
    """The service has the request and may still be working on it: a retry would double the work (and the wait)."""
    Recorder.delay = 1.0
    client = ServiceClient(server, caller_token="t", read_timeout=0.3, retries=2)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        client.request("GET", "/x")
    assert time.monotonic() - started < 0.9
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


class OneAnswerPerConnection(BaseHTTPRequestHandler):
    """Answers the first request on a connection and keeps it open (HTTP/1.1, no `Connection: close`), then closes
    it under the next request without processing it: what a server does whose keep-alive ran out just as the
    client reused the connection. `answer_only_first_connection` makes it close every later connection unanswered."""

    protocol_version = "HTTP/1.1"
    answered: list[str] = []
    dropped: list[str] = []
    answer_only_first_connection = False
    connections = 0

    def handle(self) -> None:
        OneAnswerPerConnection.connections += 1
        if OneAnswerPerConnection.answer_only_first_connection and OneAnswerPerConnection.connections > 1:
            self._drop(self.connection.recv(65536))
            return
        self.handle_one_request()
        select.select([self.connection], [], [], 10)  # the next request on this connection, or its close
        self._drop(self.connection.recv(65536))

    def _drop(self, request: bytes) -> None:
        if request:
            OneAnswerPerConnection.dropped.append(request.split(b" HTTP/")[0].decode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        OneAnswerPerConnection.answered.append(f"POST {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def closing_server():
    OneAnswerPerConnection.answered, OneAnswerPerConnection.dropped = [], []
    OneAnswerPerConnection.answer_only_first_connection, OneAnswerPerConnection.connections = False, 0
    with serving(OneAnswerPerConnection) as url:
        yield url


def test_a_post_on_a_reused_connection_the_server_closed_is_sent_again_once(closing_server):
    client = ServiceClient(closing_server, caller_token="t", retries=0, max_idle_s=60)
    assert client.request("POST", "/first", json={"n": 1}).status_code == 200
    assert client.request("POST", "/second", json={"n": 2}).status_code == 200
    assert OneAnswerPerConnection.dropped == ["POST /second"]  # closed under it on the reused connection...
    assert OneAnswerPerConnection.answered == ["POST /first", "POST /second"]  # ...then sent on a fresh one
    client.close()


def test_the_resend_after_a_closed_connection_happens_once(closing_server):
    OneAnswerPerConnection.answer_only_first_connection = True
    client = ServiceClient(closing_server, caller_token="t", retries=0, max_idle_s=60)
    assert client.request("POST", "/first").status_code == 200
    with pytest.raises(Unavailable):  # the fresh connection was closed too: no more resends for a POST
        client.request("POST", "/second")
    assert OneAnswerPerConnection.dropped == ["POST /second", "POST /second"]
    client.close()


def test_a_post_on_a_fresh_connection_closed_without_an_answer_is_not_retried(closing_server):
    OneAnswerPerConnection.answer_only_first_connection, OneAnswerPerConnection.connections = True, 1
    with pytest.raises(Unavailable):  # the server may have processed it: only idempotent methods are retried
        ServiceClient(closing_server, caller_token="t", max_idle_s=60).request("POST", "/x")
    assert OneAnswerPerConnection.dropped == ["POST /x"]


def test_idle_connections_are_not_reused_past_the_idle_limit(closing_server):
    client = ServiceClient(closing_server, caller_token="t", retries=0, max_idle_s=0)
    for path in ("/first", "/second", "/third"):
        assert client.request("POST", path).status_code == 200
    assert OneAnswerPerConnection.dropped == []  # each request on a new connection: nothing was closed under one
    assert OneAnswerPerConnection.answered == ["POST /first", "POST /second", "POST /third"]
    client.close()


class Echo(BaseHTTPRequestHandler):
    """Answers 200 with what it was sent: method, target, headers and JSON body; counts connections."""

    protocol_version = "HTTP/1.1"
    connections = 0

    def setup(self) -> None:
        Echo.connections += 1
        super().setup()

    def _answer(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        payload = json.dumps({"method": self.command, "target": self.path, "headers": dict(self.headers),
                              "body": json.loads(raw) if raw else None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echo_server():
    Echo.connections = 0
    with serving(Echo) as url:
        yield url


def test_query_parameters_and_a_json_body_are_sent_and_the_answer_is_read(echo_server):
    client = ServiceClient(echo_server, caller_token="t")
    response = client.request("POST", "/v1/x", params=[("tag", "a b"), ("tag", "c"), ("limit", "5")],
                              json={"url": "https://e.com/ä", "tags": ["x"]})
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    sent = response.json()
    assert sent["target"] == "/v1/x?tag=a+b&tag=c&limit=5"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["body"] == {"url": "https://e.com/ä", "tags": ["x"]}
    assert client.request("GET", "/v1/y", params={"start_token": "abc"}).json()["target"] == "/v1/y?start_token=abc"
    client.close()


def test_a_base_url_with_a_path_keeps_it(echo_server):
    assert ServiceClient(f"{echo_server}/prefix/", caller_token="t").request("GET", "/x").json()["target"] == \
        "/prefix/x"


def test_internal_calls_go_straight_to_the_service_whatever_proxy_the_environment_names(echo_server, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")
    assert ServiceClient(echo_server, caller_token="t", retries=0).request("GET", "/x").status_code == 200


def test_no_connection_is_opened_before_the_first_request(echo_server):
    # A client may be made in the gunicorn master before it forks (kit/serving/gunicorn.py): it must not connect.
    client = ServiceClient(echo_server, caller_token="t")
    time.sleep(0.2)
    assert Echo.connections == 0
    for _ in range(3):
        client.request("GET", "/x")
    assert Echo.connections == 1  # then kept alive and reused
    client.close()
