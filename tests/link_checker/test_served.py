"""The link checker as deployed: `delinkcious serve link-checker`, one worker process with its ops
port, the request forgery guard on by default, JSON logs, and a clean exit on SIGTERM."""
from __future__ import annotations

import json
import uuid

from delinkcious.contracts.events import LINK_ADDED, LINK_CHECKED, LINK_CHECKS_STREAM
from delinkcious.kit.core.clock import format_timestamp, utc_now

from tests.support.jetstream import publish_event, wait_for_events, wait_until
from tests.support.process import ServedService
from tests.support.services import unique_username


def test_served_worker_checks_refuses_loopback_by_default_and_stops_on_sigterm(
        tmp_path, private_nats, redis_url, callers_dir, target):
    service = ServedService("link-checker", {
        "NATS_URL": private_nats.url,
        "REDIS_URL": redis_url,
        "TRUSTED_CALLERS_DIR": str(callers_dir),
        "ALLOWED_CALLERS": "api-gateway",
        "LOG_FORMAT": "json",
    }, tmp_path / "link-checker.log")
    try:
        service.wait_ready(timeout=30)
        assert service.request("GET", "/healthz/liveness").status_code == 200

        user = unique_username()
        url = target.url(f"/ok/{user}")
        now = format_timestamp(utc_now())
        event = {
            "event_id": str(uuid.uuid4()), "event_type": "link_added", "author": user, "occurred_at": now,
            "request_id": "served-check", "username": user, "url": url, "title": "t", "description": "",
            "tags": [], "link_created_at": now, "link_updated_at": now,
        }

        def published() -> bool:  # the links stream exists once the worker's consumer has subscribed
            try:
                publish_event(private_nats.url, LINK_ADDED, event, msg_id=event["event_id"])
                return True
            except Exception:
                return False

        assert wait_until(published)
        [checked] = wait_for_events(private_nats.url, LINK_CHECKS_STREAM.name, LINK_CHECKED, 1, username=user)
        assert (checked["status"], checked["http_status"], checked["reason"]) == (
            "invalid", None, "refused: 127.0.0.1 is a loopback address")
        assert target.requests_to(f"/ok/{user}") == []  # refused before connecting

        metrics = service.request("GET", "/metrics").text
        assert ('delinkcious_link_checks_total{result="refused",service="link-checker",source="fetched"} 1.0'
                in metrics)

        assert service.terminate() == 0
        records = [json.loads(line) for line in service.logs().splitlines() if line.strip()]
        [line] = [record for record in records if record["event"] == "link_checked"]
        assert line["request_id"] == "served-check" and line["user"] == user
        assert line["check_result"] == "refused" and line["target_host"] == "127.0.0.1"
        assert records[-1]["event"] == "service_stopped"
    finally:
        service.kill()
