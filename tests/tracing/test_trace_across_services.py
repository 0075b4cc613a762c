"""One add-link request is one trace across every service, as an OTLP backend receives it.

The whole system runs under `delinkcious up` with the standard OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local
receiver (tests/support/otlp.py) that decodes the protobuf the services' exporters really send. A reader follows
an author; the author adds a link (the gateway has never seen the author's token: its check is a cache miss); the
link is checked (at a web server of the suite's, on 127.0.0.1) and reaches the reader's feed. The trace of that one
POST /v1/links must then hold: gateway -> user (token check) and -> link (the write, in PostgreSQL) -> the outbox's
publish -> news' fan-out (Redis) and link-checker's check -> its published verdict -> link's status update.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from delinkcious.contracts.events import LINK_ADDED, LINK_CHECKED

from tests.support.jetstream import wait_until
from tests.support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.up import UpProcess, free_ports, start_up
from tests.support.web import answering_host

SERVICES = ("api-gateway", "user", "link", "social-graph", "news", "link-checker")


@dataclass
class TracedSystem:
    up: UpProcess
    data_dir: Path
    ports: dict[str, int]
    receiver: OtlpReceiver
    web: str

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['api-gateway']}"

    def token_for(self, login: str) -> tuple[str, str]:
        """A signed-in user (as the gateway's login would make them) and an access token."""
        user_url = f"http://127.0.0.1:{self.ports['user']}"
        developer = (self.data_dir / "secrets" / "callers" / "developer").read_text().strip()
        headers = {"Delinkcious-Caller-Token": developer}
        signed_in = requests.post(f"{user_url}/v1/logins", headers=headers, timeout=10,
                                  json={"provider": "github", "subject": f"tracing-{login}", "login": login})
        assert signed_in.status_code in (200, 201), signed_in.text
        username = signed_in.json()["user"]["username"]
        issued = requests.post(f"{user_url}/v1/users/{username}/tokens", headers=headers, json={}, timeout=10)
        assert issued.status_code == 201, issued.text
        return username, issued.json()["token"]


@pytest.fixture(scope="module")
def traced_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedSystem]:
    with otlp_receiver() as receiver, answering_host() as web:
        data_dir = tmp_path_factory.mktemp("tracing") / "data"
        ports = free_ports()
        up = start_up(data_dir, ports, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                      OTEL_BSP_SCHEDULE_DELAY="100",  # export within a tenth of a second, not the default 5 s
                      LINK_CHECKER__LINK_CHECKER_ALLOW_PRIVATE_ADDRESSES="true",
                      LINK_CHECKER__LINK_CHECKER_HOST_INTERVAL="0")
        try:
            up.wait_for_line("delinkcious is up", timeout=180)
            yield TracedSystem(up, data_dir, ports, receiver, web)
        finally:
            code, transcript = up.stop()
            assert code == 0, transcript[-5000:]


def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.span_id: span for span in spans}


def parent_of(span: ReceivedSpan, spans: dict[str, ReceivedSpan]) -> ReceivedSpan:
    assert span.parent_span_id in spans, f"the parent of {span} is not in the trace"
    return spans[span.parent_span_id]


def ancestors(span: ReceivedSpan, spans: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    found = []
    while span.parent_span_id:
        span = parent_of(span, spans)
        found.append(span)
    return found


def one(spans: list[ReceivedSpan], **wanted: str) -> ReceivedSpan:
    matching = [span for span in spans if all(getattr(span, name) == value for name, value in wanted.items())]
    assert len(matching) == 1, (wanted, matching)
    return matching[0]


def route_of(span: ReceivedSpan) -> str | None:
    return span.attributes.get("http.route")


def render(spans: list[ReceivedSpan]) -> str:
    """The trace as an indented tree: how the closing note and a failure show it."""
    children: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        children.setdefault(span.parent_span_id, []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            lines.append(f"{'  ' * depth}{span.service}: {span.kind} {span.name}")
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


def test_an_added_link_is_one_trace_from_the_gateway_to_the_feed_and_the_checked_status(traced_system):
    system = traced_system
    author, author_token = system.token_for("tracing-author")
    reader, reader_token = system.token_for("tracing-reader")
    followed = requests.post(f"{system.gateway}/v1/following", json={"followed": author}, timeout=15,
                             headers={"Authorization": f"Bearer {reader_token}"})
    assert followed.status_code in (200, 201), followed.text

    url = f"{system.web}/traced/{time.time_ns()}"
    # A client's trace context is not taken at the public edge: the gateway begins the trace itself.
    foreign_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    added = requests.post(f"{system.gateway}/v1/links", json={"url": url, "title": "traced"}, timeout=15,
                          headers={"Authorization": f"Bearer {author_token}",
                                   "traceparent": f"00-{foreign_trace}-00f067aa0ba902b7-01"})
    assert added.status_code == 201, added.text

    def link_status() -> str | None:
        listed = requests.get(f"{system.gateway}/v1/links", timeout=15,
                              headers={"Authorization": f"Bearer {author_token}"}).json()["links"]
        return next((link["status"] for link in listed if link["url"] == url), None)

    assert wait_until(lambda: link_status() == "valid", timeout=30), link_status()
    feed = lambda: requests.get(f"{system.gateway}/v1/news", timeout=15,  # noqa: E731
                                headers={"Authorization": f"Bearer {reader_token}"}).json()["events"]
    assert wait_until(lambda: any(event["url"] == url for event in feed()), timeout=30)

    # The trace of the POST: the gateway's server span for it is its root.
    def add_link_root() -> ReceivedSpan | None:
        return next((span for span in system.receiver.snapshot()
                     if span.service == "api-gateway" and span.kind == "SERVER" and route_of(span) == "/v1/links"
                     and span.attributes.get("http.method", span.attributes.get("http.request.method")) == "POST"),
                    None)

    assert wait_until(lambda: add_link_root() is not None, timeout=15), sorted(
        {(span.service, span.name) for span in system.receiver.snapshot()})
    root = add_link_root()
    assert root.parent_span_id == "" and root.trace_id != foreign_trace, "the gateway starts the trace"

    def complete() -> bool:
        # Every span's parent arrived (spans end, and are exported, children first), and every hop's span: each
        # process exports on its own schedule.
        trace = system.receiver.trace(root.trace_id)
        known = {span.span_id for span in trace}
        hops = {(span.service, span.kind) for span in trace}
        return all(not span.parent_span_id or span.parent_span_id in known for span in trace) and hops >= {
            ("user", "SERVER"), ("link", "SERVER"), ("link", "PRODUCER"), ("news", "CONSUMER"),
            ("link-checker", "CONSUMER"), ("link-checker", "PRODUCER"), ("link", "CONSUMER")} and any(span.service == "link" and span.kind == "CONSUMER" and span.name == f"process {LINK_CHECKED}"
                   and any(child.parent_span_id == span.span_id for child in trace) for span in trace)

    wait_until(complete, timeout=30)
    trace = system.receiver.trace(root.trace_id)
    spans = by_id(trace)
    tree = render(trace)
    print(f"\nthe trace of one POST /v1/links ({len(trace)} spans):\n{tree}")

    # Every span but the root has its parent in this trace: nothing was cut off on the way.
    for span in trace:
        if span is not root:
            parent_of(span, spans)

    # gateway -> user: the token check (a cache miss: the gateway had not seen this token), over HTTP.
    verify = one(trace, service="user", kind="SERVER")
    assert route_of(verify) == "/v1/tokens/verify", tree
    gateway_call = parent_of(verify, spans)
    assert (gateway_call.service, gateway_call.kind) == ("api-gateway", "CLIENT"), tree
    assert parent_of(gateway_call, spans) is root, tree

    # The gateway's rate limits, counted in Redis by its first hooks, belong to the request too.
    assert any(span.service == "api-gateway" and span.attributes.get("db.system") == "redis"
               and span.parent_span_id == root.span_id for span in trace), tree

    # gateway -> link: the write, its statements in PostgreSQL.
    write = one(trace, service="link", kind="SERVER")
    assert route_of(write) == "/v1/users/<username>/links", tree
    assert parent_of(parent_of(write, spans), spans) is root, tree
    statements = [span for span in trace if span.service == "link" and span.kind == "CLIENT"
                  and span.attributes.get("db.system") == "postgresql" and parent_of(span, spans) is write]
    assert any("INSERT INTO links" in str(span.attributes.get("db.statement")) for span in statements), tree
    assert any("INSERT INTO outbox" in str(span.attributes.get("db.statement")) for span in statements), tree

    # link's outbox -> NATS: the relay's publish continues the request's trace (its context was stored on the
    # outbox row), as a child of the write.
    published = one(trace, service="link", kind="PRODUCER", name=f"publish {LINK_ADDED}")
    assert parent_of(published, spans) is write, tree
    assert published.attributes["messaging.system"] == "nats"

    # NATS -> news: the fan-out to the reader's feed, in Redis.
    fan_out = one(trace, service="news", kind="CONSUMER", name=f"process {LINK_ADDED}")
    assert parent_of(fan_out, spans) is published, tree
    assert any(span.service == "news" and span.kind == "CLIENT" and span.attributes.get("db.system") == "redis"
               and fan_out in ancestors(span, spans) for span in trace), tree

    # NATS -> link-checker: the check, and its verdict published -> link: the status written.
    check = one(trace, service="link-checker", kind="CONSUMER", name=f"process {LINK_ADDED}")
    assert parent_of(check, spans) is published, tree
    verdict = one(trace, service="link-checker", kind="PRODUCER", name=f"publish {LINK_CHECKED}")
    assert check in ancestors(verdict, spans), tree
    status = one(trace, service="link", kind="CONSUMER", name=f"process {LINK_CHECKED}")
    assert parent_of(status, spans) is verdict, tree
    assert any(span.service == "link" and span.attributes.get("db.system") == "postgresql"
               and "UPDATE links" in str(span.attributes.get("db.statement")) and status in ancestors(span, spans)
               for span in trace), tree

    # Six services, one trace; and the exporters spoke OTLP's protobuf.
    assert {span.service for span in trace} >= {"api-gateway", "user", "link", "news", "link-checker"}, tree
    assert system.receiver.content_types == {"application/x-protobuf"}


def test_log_lines_of_a_traced_request_carry_its_trace_and_span(traced_system):
    system = traced_system
    _author, token = system.token_for("tracing-logs")
    listed = requests.get(f"{system.gateway}/v1/links", headers={"Authorization": f"Bearer {token}",
                                                                "X-Request-Id": "tracing-log-check"}, timeout=15)
    assert listed.status_code == 200
    assert wait_until(lambda: any(
        span.service == "link" and span.kind == "SERVER" and route_of(span) == "/v1/users/<username>/links"
        for span in system.receiver.snapshot()), timeout=15)

    def access_lines() -> list[dict]:
        return [line for line in system.up.json_lines() if line.get("request_id") == "tracing-log-check"
                and line.get("event") == "request"]

    assert wait_until(lambda: {line.get("service") for line in access_lines()} >= {"api-gateway", "link"}, 10)
    lines = access_lines()
    assert len({line["trace_id"] for line in lines}) == 1, lines  # one request, one trace, in every service
    def traced() -> dict[str, ReceivedSpan]:
        return {span.span_id: span for span in system.receiver.trace(lines[0]["trace_id"])}

    # Each service exports its spans on its own schedule.
    wait_until(lambda: all(line["span_id"] in traced() for line in lines), timeout=10)
    spans = traced()
    for line in lines:
        span = spans.get(line["span_id"])
        assert span is not None and span.kind == "SERVER" and span.service == line["service"], (line, span)
