"""The link and link-checker services wired as in production (real pool, outbox relay, NATS consumers) in this one
process, with OpenTelemetry's in-memory exporter: a link added over HTTP, checked, and its status written. Prints
every finished span as one JSON object a line.

Run in a process of its own (tests/tracing/test_in_memory_spans.py does) because tracing, once configured,
patches the libraries for the life of the process: the rest of the suite must not run traced.
  python -m tests.tracing.in_process_flow POSTGRES_ADMIN_DSN NATS_URL REDIS_URL WORK_DIR
"""
from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

from delinkcious.kit.observability.tracing import configure_tracing
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.jetstream import consumer_exists, wait_until
from tests.support.web import answering_host

EXPORTER = InMemorySpanExporter()


def main(argv: list[str]) -> int:
    postgres_admin_dsn, nats_url, redis_url, work_dir = argv
    # Before any service part exists, as `delinkcious serve` does.
    configure_tracing("in-process", exporter=EXPORTER)
    from delinkcious.contracts.events import LINKS_STREAM
    from delinkcious.link.app import DEFINITION as LINK
    from delinkcious.link_checker.app import DEFINITION as CHECKER
    from delinkcious.link_checker.service import CHECKER_CONSUMER
    from delinkcious.local.servers import ensure_service_database

    from tests.support.services import ServiceEnvironment, unique_username

    secrets_dir = Path(work_dir) / "secrets"
    callers_dir = secrets_dir / "callers"
    callers_dir.mkdir(parents=True)
    (callers_dir / "api-gateway").write_text(secrets.token_urlsafe(32))
    environment = ServiceEnvironment(postgres_admin_dsn=postgres_admin_dsn, nats_url=nats_url, redis_url=redis_url,
                                     secrets_dir=secrets_dir, callers_dir=callers_dir,
                                     ensure_database=ensure_service_database)
    author = unique_username("traced")
    # The checker judges its own network only after many checks (this flow makes one): not what is traced here.
    checker_settings = {"link_checker_allow_private_addresses": True, "link_checker_host_interval": 0.0,
                        "link_checker_outage_min_checks": 10000}
    with answering_host() as web, environment.running(LINK) as (_link, link_app), environment.running(
            CHECKER, **checker_settings) as (checker, _checker_app):
        # Its consumer subscribes in the background: the link is added once it is there.
        assert wait_until(lambda: consumer_exists(checker, LINKS_STREAM.name, CHECKER_CONSUMER), timeout=30)
        client = link_app.test_client()
        headers = environment.caller_headers()
        url = f"{web}/in-process/{time.time_ns()}"
        added = client.post(f"/v1/users/{author}/links", json={"url": url, "title": "traced"}, headers=headers)
        assert added.status_code == 201, added.get_data(as_text=True)

        def status() -> str:
            listed = client.get(f"/v1/users/{author}/links", headers=headers).get_json()["links"]
            return next(link["status"] for link in listed if link["url"] == url)

        assert wait_until(lambda: status() == "valid", timeout=30, interval=0.25), status()
        # The status update's own spans end just after its commit.
        wait_until(lambda: any(span.name.startswith("UPDATE") for span in EXPORTER.get_finished_spans()), 5)
        time.sleep(0.2)
    for span in EXPORTER.get_finished_spans():
        context, parent = span.get_span_context(), span.parent
        print(json.dumps({
            "name": span.name, "kind": span.kind.name, "trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x"), "parent_span_id": format(parent.span_id, "016x")
            if parent is not None else "", "parent_is_remote": bool(parent is not None and parent.is_remote),
            "attributes": {key: value if isinstance(value, (str, int, float, bool)) else list(value)
                           for key, value in (span.attributes or {}).items()},
            "service": span.resource.attributes.get("service.name"),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
