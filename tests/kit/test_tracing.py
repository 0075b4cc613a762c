"""Tracing is off unless an OTLP endpoint is configured, and then patches the libraries the process has. Checked in
fresh processes: configured tracing lasts for the life of a process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from delinkcious.kit.observability.tracing import wanted

PROBE = """
import json, urllib3, psycopg2, redis, grpc
from delinkcious.kit.observability import tracing
from delinkcious.kit.observability.context import event_headers
from delinkcious.kit.observability.logs import configure_logging, get_logger
configure_logging("probe")
on = tracing.configure_tracing("probe")
patched = {name: hasattr(function, "__wrapped__") for name, function in (
    ("urllib3", urllib3.connectionpool.HTTPConnectionPool.urlopen), ("psycopg2", psycopg2.connect),
    ("redis", redis.Redis.execute_command), ("grpc", grpc.insecure_channel))}
headers = event_headers("event-1", "request-1")
if on:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind
    with trace.get_tracer("probe").start_as_current_span("incoming", kind=SpanKind.SERVER):
        inside = event_headers("event-1", "request-1")
        get_logger().info("inside", traceparent=inside.get("traceparent"))
    with trace.get_tracer("probe").start_as_current_span("background", kind=SpanKind.CLIENT):
        get_logger().info("untraced")
print(json.dumps({"on": on, "patched": patched, "headers": headers}))
"""


def probe(**environment: str) -> tuple[dict, list[dict]]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    finished = subprocess.run([sys.executable, "-c", PROBE], env={**env, **environment}, capture_output=True,
                              text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    lines = [json.loads(line) for line in finished.stdout.splitlines()]
    # The result, and the log lines (at exit, the exporter may log that nothing took its spans).
    return next(line for line in lines if "patched" in line), [line for line in lines if "event" in line]


def test_off_by_default_nothing_is_patched_and_no_trace_context_travels():
    result, log_lines = probe()
    assert result == {"on": False, "patched": dict.fromkeys(("urllib3", "psycopg2", "redis", "grpc"), False),
                      "headers": {"Nats-Msg-Id": "event-1", "X-Request-Id": "request-1"}}


def test_an_otlp_endpoint_turns_it_on_with_every_library_instrumented_and_ids_on_log_lines():
    # Nothing listens there: spans are only queued for export, never awaited.
    result, log_lines = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_BSP_SCHEDULE_DELAY="60000")
    assert result["on"] is True
    assert result["patched"] == dict.fromkeys(("urllib3", "psycopg2", "redis", "grpc"), True)
    assert "traceparent" not in result["headers"], "no trace outside a span"
    inside = next(line for line in log_lines if line["event"] == "inside")
    assert len(inside["trace_id"]) == 32 and len(inside["span_id"]) == 16
    # An event made inside carries that span as its parent, for the consumer's span.
    assert inside["traceparent"].startswith(f"00-{inside['trace_id']}-{inside['span_id']}-")
    # Background work (a root span that is not a request or a message) starts no trace: no ids on its lines.
    untraced = next(line for line in log_lines if line["event"] == "untraced")
    assert "trace_id" not in untraced


@pytest.mark.parametrize(("environment", "expected"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),  # compose passes an unset variable as empty
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
])
def test_what_turns_tracing_on(environment, expected):
    assert wanted(environment) is expected
