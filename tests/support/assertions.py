"""Checks shared by the HTTP tests of every service."""
from __future__ import annotations

from typing import Any

from tests.support.jetstream import wait_until


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The response is DESIGN §2's error shape with this status and code (and names `field`)."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == code and isinstance(body["message"], str) and body["message"]
    if field:
        assert body["field"] == field and body["message"].startswith(field)
    return body


def assert_live_then_ready(client: Any) -> dict[str, dict[str, Any]]:
    """Liveness answers 200 and covers the outbox relay and the consumers; then, once readiness says
    ready, its checks by name."""
    live = client.get("/healthz/liveness")
    assert live.status_code == 200, live.get_data(as_text=True)
    assert {c["name"] for c in live.get_json()["checks"]} >= {"outbox_relay", "consumers"}, live.get_json()
    ready = wait_until(lambda: (r := client.get("/healthz/readiness")).status_code == 200 and
                       r.get_json()["status"] == "ready" and r)
    return {check["name"]: check for check in ready.get_json()["checks"]}
