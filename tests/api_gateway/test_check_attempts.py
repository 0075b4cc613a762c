"""Through the gateway to the real link service (tests/api_gateway/link_chain.py): a link whose last check was
inconclusive keeps the status of its last conclusive check and shows the attempt (`inconclusive_check`), as the
public API's document describes it; a later verdict clears it."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from delinkcious.contracts import public_api
from delinkcious.contracts.events import LINK_CHECK_INCONCLUSIVE, LINK_CHECKED
from delinkcious.kit.core.clock import format_timestamp, utc_now

from tests.api_gateway.link_chain import link_chain  # noqa: F401 - the fixture
from tests.support.jetstream import publish_event, wait_until


def publish(nats_url: str, subject: str, payload: dict[str, Any]) -> None:
    """Published once the link service's consumers have created the stream (they do as they start)."""

    def published() -> bool:
        try:
            publish_event(nats_url, subject, payload)
            return True
        except Exception:
            return False

    assert wait_until(published, timeout=15)


def envelope(event_type: str) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "event_type": event_type, "author": "link-checker",
            "occurred_at": format_timestamp(utc_now()), "request_id": f"req-{uuid.uuid4().hex[:8]}"}


def test_the_public_link_shows_its_inconclusive_check_and_keeps_its_status(link_chain, service_environment):  # noqa: F811
    nats_url = service_environment.nats_url
    owner = link_chain.new_user("attempts")
    username = owner["Authorization"].removeprefix("Bearer dlk_")
    url = "https://attempts.example/public"
    created = link_chain.call("POST", "/v1/links", owner, json={"url": url, "title": "Flaky"})
    assert created.status_code == 201 and created.json()["inconclusive_check"] is None
    link_created_at = created.json()["created_at"]

    def shown() -> dict[str, Any]:
        response = link_chain.call("GET", "/v1/links", owner)
        assert response.status_code == 200
        page = response.json()
        public_api.LinkPage.model_validate(page)  # what the document promises
        [link] = page["links"]
        return link

    start = utc_now()
    publish(nats_url, LINK_CHECKED, {**envelope("link_checked"), "username": username, "url": url, "status": "valid",
                                     "http_status": 200, "checked_at": format_timestamp(start),
                                     "link_created_at": link_created_at})
    assert wait_until(lambda: shown()["status"] == "valid", timeout=15)

    attempted_at = start + timedelta(seconds=5)
    publish(nats_url, LINK_CHECK_INCONCLUSIVE, {
        **envelope("link_check_inconclusive"), "username": username, "url": url,
        "attempted_at": format_timestamp(attempted_at), "reason": "HTTP 503", "failure": "http_5xx",
        "http_status": 503, "attempts": 2, "next_attempt_at": format_timestamp(attempted_at + timedelta(minutes=2)),
        "given_up": False, "link_created_at": link_created_at})
    assert wait_until(lambda: shown()["inconclusive_check"] is not None, timeout=15)
    link = shown()
    assert (link["status"], link["http_status"], link["status_reason"]) == ("valid", 200, None)
    assert link["inconclusive_check"] == {
        "attempted_at": format_timestamp(attempted_at), "reason": "HTTP 503", "failure": "http_5xx",
        "http_status": 503, "attempts": 2, "next_attempt_at": format_timestamp(attempted_at + timedelta(minutes=2)),
        "given_up": False}

    # The other routes answer the link with it too.
    assert link_chain.call("PUT", "/v1/links", owner, json={"url": url, "title": "Renamed"}).json()[
        "inconclusive_check"]["attempts"] == 2

    publish(nats_url, LINK_CHECKED, {**envelope("link_checked"), "username": username, "url": url,
                                     "status": "invalid", "http_status": 404, "reason": "HTTP 404",
                                     "checked_at": format_timestamp(attempted_at + timedelta(seconds=1)),
                                     "link_created_at": link_created_at})
    assert wait_until(lambda: shown()["status"] == "invalid", timeout=15)
    assert shown()["inconclusive_check"] is None


def test_the_document_describes_the_inconclusive_check(link_chain):  # noqa: F811
    document = link_chain.call("GET", "/v1/openapi.json", {}).json()
    schemas = document["components"]["schemas"]
    link = schemas["Link"]
    assert "inconclusive_check" not in link.get("required", [])  # optional, and null when there is none
    assert {"$ref": "#/components/schemas/InconclusiveCheck"} in link["properties"]["inconclusive_check"]["anyOf"]
    assert {"type": "null"} in link["properties"]["inconclusive_check"]["anyOf"]
    check = schemas["InconclusiveCheck"]
    assert set(check["properties"]) == {"attempted_at", "reason", "failure", "http_status", "attempts",
                                        "next_attempt_at", "given_up"}
    assert set(check["required"]) == {"attempted_at", "reason", "failure", "attempts", "next_attempt_at", "given_up"}
