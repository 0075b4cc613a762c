"""The link service records the link checker's attempts without verdict (link-check-inconclusive events), wired as in
production (real PostgreSQL, NATS JetStream, its own durable consumer): the link keeps the status of its last
conclusive check, shows the attempt, and a later verdict clears it."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg2.errors
import pytest
from delinkcious.contracts.events import LINK_CHECK_INCONCLUSIVE, LINK_CHECKED, LINK_CHECKS_STREAM
from delinkcious.kit.core.clock import format_timestamp, utc_now
from delinkcious.link.app import DEFINITION
from delinkcious.link.service import CHECK_ATTEMPTS_CONSUMER
from prometheus_client import REGISTRY

from tests.support.jetstream import publish_event, wait_until
from tests.support.services import unique_username


def consumer_exists(runtime: Any, durable: str) -> bool:
    try:
        runtime.nats.run(runtime.nats.jetstream.consumer_info(LINK_CHECKS_STREAM.name, durable))
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def link_app(service_environment):
    with service_environment.running(DEFINITION) as (runtime, app):
        # Its consumers create the stream they read.
        assert wait_until(lambda: consumer_exists(runtime, CHECK_ATTEMPTS_CONSUMER))
        yield runtime, app


class Links:
    def __init__(self, app: Any, headers: dict[str, str]) -> None:
        self.client = app.test_client()
        self.headers = headers
        self.user = unique_username()

    def add(self, url: str) -> dict[str, Any]:
        response = self.client.post(f"/v1/users/{self.user}/links", json={"url": url, "title": "T"},
                                    headers=self.headers)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def get(self, url: str) -> dict[str, Any]:
        links = self.client.get(f"/v1/users/{self.user}/links", headers=self.headers).get_json()["links"]
        return next(link for link in links if link["url"] == url)


@pytest.fixture
def links(link_app, service_environment) -> Links:
    return Links(link_app[1], service_environment.caller_headers())


def attempt_event(user: str, url: str, attempted_at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "event_type": "link_check_inconclusive", "author": "link-checker",
        "occurred_at": format_timestamp(utc_now()), "request_id": f"req-{uuid.uuid4().hex[:8]}",
        "username": user, "url": url, "attempted_at": format_timestamp(attempted_at), "reason": "HTTP 503",
        "failure": "http_5xx", "http_status": 503, "attempts": 1,
        "next_attempt_at": format_timestamp(attempted_at + timedelta(seconds=60)), "given_up": False, **extra,
    }


def verdict_event(user: str, url: str, checked_at: datetime, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "event_type": "link_checked", "author": "link-checker",
        "occurred_at": format_timestamp(utc_now()), "username": user, "url": url, "status": status,
        "checked_at": format_timestamp(checked_at), **extra,
    }


def consumed(outcome: str) -> float:
    return REGISTRY.get_sample_value("delinkcious_events_consumed_total", {
        "service": "link", "consumer": CHECK_ATTEMPTS_CONSUMER, "outcome": outcome}) or 0.0


def test_an_attempt_is_shown_with_the_last_conclusive_status_and_a_later_verdict_clears_it(links, service_environment):
    nats_url = service_environment.nats_url
    url = "https://attempts.example/page"
    added = links.add(url)
    assert added["inconclusive_check"] is None
    start = utc_now()
    publish_event(nats_url, LINK_CHECKED, verdict_event(links.user, url, start, "valid", http_status=200,
                                                        link_created_at=added["created_at"]))
    assert wait_until(lambda: links.get(url)["status"] == "valid")

    first = attempt_event(links.user, url, start + timedelta(seconds=1), link_created_at=added["created_at"])
    publish_event(nats_url, LINK_CHECK_INCONCLUSIVE, first)
    publish_event(nats_url, LINK_CHECK_INCONCLUSIVE, first)  # a redelivery (a different message)
    assert wait_until(lambda: links.get(url)["inconclusive_check"] is not None)
    link = links.get(url)
    assert (link["status"], link["http_status"], link["status_reason"]) == ("valid", 200, None)
    assert link["inconclusive_check"] == {
        "attempted_at": first["attempted_at"], "reason": "HTTP 503", "failure": "http_5xx", "http_status": 503,
        "attempts": 1, "next_attempt_at": first["next_attempt_at"], "given_up": False}

    # The last attempt, given up; then an older one arrives late and changes nothing.
    last = attempt_event(links.user, url, start + timedelta(seconds=3), attempts=3, next_attempt_at=None,
                         given_up=True, reason="timed out: no answer within 10 s", failure="timeout", http_status=None)
    publish_event(nats_url, LINK_CHECK_INCONCLUSIVE, last)
    assert wait_until(lambda: links.get(url)["inconclusive_check"]["given_up"])
    processed = consumed("processed")
    publish_event(nats_url, LINK_CHECK_INCONCLUSIVE,
                  attempt_event(links.user, url, start + timedelta(seconds=2), attempts=2))
    assert wait_until(lambda: consumed("processed") > processed)
    link = links.get(url)
    assert link["inconclusive_check"]["attempts"] == 3 and link["inconclusive_check"]["next_attempt_at"] is None
    assert link["status"] == "valid"

    publish_event(nats_url, LINK_CHECKED, verdict_event(links.user, url, start + timedelta(seconds=4), "invalid",
                                                        http_status=404, reason="HTTP 404"))
    assert wait_until(lambda: links.get(url)["status"] == "invalid")
    assert links.get(url)["inconclusive_check"] is None

    with service_environment.pool(DEFINITION, pool_size=1) as database, database.transaction() as cursor:
        cursor.execute("SELECT count(*) AS n FROM processed_events WHERE event_id = %s AND consumer = %s",
                       (first["event_id"], CHECK_ATTEMPTS_CONSUMER))
        assert cursor.fetchone()["n"] == 1


def test_malformed_attempts_are_dropped_not_retried_forever(links, service_environment):
    nats_url = service_environment.nats_url
    url = "https://attempts.example/poison"
    links.add(url)
    rejected = consumed("rejected")
    now = utc_now()
    bad_fields = ({"attempts": 0}, {"given_up": True}, {"failure": ""}, {"attempted_at": "yesterday"},
                  {"url": "ftp://attempts.example/poison"}, {"url": url + "\udc80"})
    for bad in bad_fields:
        publish_event(nats_url, LINK_CHECK_INCONCLUSIVE, {**attempt_event(links.user, url, now), **bad})
    assert wait_until(lambda: consumed("rejected") >= rejected + len(bad_fields))
    good = attempt_event(links.user, url, now, reason="HTTP 502\x00 Bad \udc80gateway")
    publish_event(nats_url, LINK_CHECK_INCONCLUSIVE, good)
    assert wait_until(lambda: links.get(url)["inconclusive_check"] is not None)
    assert links.get(url)["inconclusive_check"]["reason"] == "HTTP 502 Bad ?gateway"


def test_the_attempt_consumer_is_durable_and_reads_only_attempts(link_app):
    runtime, _app = link_app
    info = runtime.nats.run(runtime.nats.jetstream.consumer_info(LINK_CHECKS_STREAM.name, CHECK_ATTEMPTS_CONSUMER))
    assert consumer_exists(runtime, "link-service-check-results")  # the verdicts' consumer, beside it
    assert info.config.durable_name == CHECK_ATTEMPTS_CONSUMER
    assert info.config.filter_subject == LINK_CHECK_INCONCLUSIVE


def test_the_database_refuses_half_an_attempt(service_environment):
    with service_environment.pool(DEFINITION, pool_size=1) as database:
        with pytest.raises(psycopg2.errors.CheckViolation), database.transaction() as cursor:
            cursor.execute(
                "INSERT INTO links (username, url, url_key, title, created_at, updated_at, last_attempt_at) "
                "VALUES (%s, 'https://half.example', 'https://half.example', 't', now(), now(), %s)",
                (unique_username(), datetime.now(timezone.utc)))
