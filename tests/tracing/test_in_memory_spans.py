"""The span tree the kit makes, read from OpenTelemetry's in-memory exporter: a request to the link service, its
statements, the outbox relay's publish continuing the request's trace, the link checker's consume, fetch and
published verdict, and the link service's consume of that verdict with its status update.

The services run in one process (tests/tracing/in_process_flow.py, started here with the suite's PostgreSQL and
Redis and a NATS of its own), so every span has that process's resource: which service made a span is told by
what it is (the link's routes, each service's durable consumer). tests/tracing/test_trace_across_services.py
follows the same request through the separate processes of `delinkcious up`, over OTLP.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from delinkcious.contracts.events import LINK_ADDED, LINK_CHECKED
from delinkcious.link.events import CHECK_RESULTS_CONSUMER
from delinkcious.link_checker.events import CHECKER_CONSUMER

ROOT = Path(__file__).resolve().parents[2]


def test_one_link_added_is_one_trace_through_the_outbox_nats_and_the_checker(postgres_admin_dsn, redis_url,
                                                                               private_nats, tmp_path):
    finished = subprocess.run(
        [sys.executable, "-m", "tests.tracing.in_process_flow", postgres_admin_dsn, private_nats.url, redis_url,
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    # The flow's own lines, without its polling's access lines.
    told = "\n".join(line for line in (finished.stdout + finished.stderr).splitlines() if "GET path=" not in line)
    assert finished.returncode == 0, told[-8000:]
    spans = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith('{"name"')]
    by_id = {span["span_id"]: span for span in spans}

    def parent(span: dict) -> dict:
        assert span["parent_span_id"] in by_id, f"parent of {span['name']} missing"
        return by_id[span["parent_span_id"]]

    def ancestors(span: dict) -> list[dict]:
        found = []
        while span["parent_span_id"]:
            span = parent(span)
            found.append(span)
        return found

    def only(**wanted) -> dict:
        matching = [span for span in spans if all(span.get(key) == value for key, value in wanted.items())]
        assert len(matching) == 1, (wanted, [(span["kind"], span["name"]) for span in spans])
        return matching[0]

    request = only(kind="SERVER", name="POST /v1/users/<username>/links")
    assert request["parent_span_id"] == "", "the request starts the trace"
    trace = [span for span in spans if span["trace_id"] == request["trace_id"]]
    assert {span["service"] for span in trace} == {"in-process"}

    statements = [span for span in trace if span["kind"] == "CLIENT" and parent(span) is request
                  and span["attributes"].get("db.system") == "postgresql"]
    assert any(str(span["attributes"].get("db.statement", "")).startswith("INSERT INTO links") for span in statements)

    published = only(kind="PRODUCER", name=f"publish {LINK_ADDED}")
    assert parent(published) is request  # the relay's thread, continuing the trace stored on the outbox row
    assert published["attributes"]["messaging.system"] == "nats"
    assert published["attributes"]["messaging.message.id"]

    check = only(kind="CONSUMER", name=f"process {LINK_ADDED}")
    assert parent(check) is published and check["parent_is_remote"]  # carried in the NATS message's headers
    assert check["attributes"]["messaging.consumer.group.name"] == CHECKER_CONSUMER
    fetch = next(span for span in trace if span["kind"] == "CLIENT" and span["name"].endswith("(link check)"))
    assert parent(fetch) is check and fetch["attributes"]["http.response.status_code"] == 200

    verdict = only(kind="PRODUCER", name=f"publish {LINK_CHECKED}")
    assert check in ancestors(verdict)
    status = only(kind="CONSUMER", name=f"process {LINK_CHECKED}")
    assert parent(status) is verdict and status["parent_is_remote"]
    assert status["attributes"]["messaging.consumer.group.name"] == CHECK_RESULTS_CONSUMER
    assert any(span["kind"] == "CLIENT" and str(span["attributes"].get("db.statement", "")).startswith("UPDATE links")
               and status in ancestors(span) for span in trace)

    # Every span of the flow is in this one trace; the outbox relay's own polling started none.
    assert all(span["trace_id"] == request["trace_id"] for span in spans
               if span["kind"] in ("PRODUCER", "CONSUMER") or "outbox" in str(span["attributes"].get("db.statement")))
