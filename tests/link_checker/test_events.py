"""The link checker wired as deployed (real NATS JetStream, real Redis), checking a local web server:
link events in, link-checked events out for conclusive answers only (an inconclusive one is announced with a
link-check-inconclusive event and retried by the checker's retry workers), and with the real link service a link
goes from pending to valid or invalid, or stays as it was and shows its inconclusive check.

It runs on NATS and Redis servers of this module's own: the durable consumer starts at the beginning of the
links stream (the shared server's stream holds every other test's links), and the retry queue is this
module's alone."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from delinkcious.contracts.events import (
    LINK_ADDED,
    LINK_CHECK_INCONCLUSIVE,
    LINK_CHECKED,
    LINK_CHECKS_STREAM,
    LINK_UPDATED,
    LINKS_STREAM,
)
from delinkcious.kit.core.clock import format_timestamp, utc_now
from delinkcious.link.app import DEFINITION as LINK
from delinkcious.link_checker.app import DEFINITION as CHECKER
from delinkcious.local.servers import NatsServer, RedisServer
from prometheus_client import REGISTRY

from tests.support.jetstream import publish_event, read_events, wait_for_events, wait_until
from tests.support.services import unique_username

FAST = {
    "link_checker_allow_private_addresses": True,
    "link_checker_timeout": 0.3,
    "link_checker_connect_timeout": 0.3,
    "link_checker_backoff_initial": 0.1,
    "link_checker_backoff_max": 0.4,
    "link_checker_max_attempts": 3,
    "link_checker_host_interval": 0.0,
    "link_checker_outage_min_checks": 10000,  # these tests are not about outages
}


@pytest.fixture(scope="module")
def nats_of_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("link-checker-nats"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_of_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("link-checker-redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def consumer_exists(runtime: Any) -> bool:
    try:
        runtime.nats.run(runtime.nats.jetstream.consumer_info(LINKS_STREAM.name, "link-checker"))
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def checker(service_environment, nats_of_module, redis_of_module):
    with service_environment.running(CHECKER, nats_url=nats_of_module, redis_url=redis_of_module, **FAST) as (
            runtime, app):
        assert wait_until(lambda: consumer_exists(runtime))  # it creates the stream it consumes
        yield runtime, app


def link_event(user: str, url: str, subject: str = LINK_ADDED, **extra: Any) -> dict[str, Any]:
    now = format_timestamp(utc_now())
    return {
        "event_id": str(uuid.uuid4()), "event_type": "link_added" if subject == LINK_ADDED else "link_updated",
        "author": user, "occurred_at": now, "request_id": f"req-{uuid.uuid4().hex[:8]}",
        "username": user, "url": url, "title": "T", "description": "", "tags": [],
        "link_created_at": now, "link_updated_at": now, **extra,
    }


def consumed(outcome: str) -> float:
    return REGISTRY.get_sample_value("delinkcious_events_consumed_total", {
        "service": "link-checker", "consumer": "link-checker", "outcome": outcome}) or 0.0


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": "link-checker", **labels}) or 0.0


def checked_events(nats_url: str, user: str) -> list[dict[str, Any]]:
    return [event for event in read_events(nats_url, LINK_CHECKS_STREAM.name, LINK_CHECKED) if event["username"] == user]


def attempt_events(nats_url: str, user: str) -> list[dict[str, Any]]:
    return [event for event in read_events(nats_url, LINK_CHECKS_STREAM.name, LINK_CHECK_INCONCLUSIVE)
            if event["username"] == user]


def test_link_events_are_answered_with_link_checked_events(checker, nats_of_module, target):
    user = unique_username()
    ok, missing = target.url(f"/ok/{user}"), target.url(f"/missing/{user}")
    added = link_event(user, ok)
    publish_event(nats_of_module, LINK_ADDED, added)
    publish_event(nats_of_module, LINK_UPDATED, link_event(user, missing, LINK_UPDATED))

    events = wait_for_events(nats_of_module, LINK_CHECKS_STREAM.name, LINK_CHECKED, 2, username=user)
    by_url = {event["url"]: event for event in events}
    assert set(by_url) == {ok, missing}
    valid, invalid = by_url[ok], by_url[missing]
    assert (valid["status"], valid["http_status"], valid["reason"]) == ("valid", 200, None)
    assert (invalid["status"], invalid["http_status"], invalid["reason"]) == ("invalid", 404, "HTTP 404")
    assert valid["event_type"] == "link_checked" and valid["author"] == "link-checker"
    assert valid["link_created_at"] == added["link_created_at"] and valid["checked_at"].endswith("Z")
    assert valid["request_id"] == added["request_id"] == valid["_headers"]["X-Request-Id"]
    assert valid["_headers"]["Nats-Msg-Id"] == valid["event_id"] != added["event_id"]


def test_a_redelivered_link_event_yields_one_link_checked_event(checker, nats_of_module, target):
    user = unique_username()
    event = link_event(user, target.url(f"/ok/{user}"))
    processed_before = consumed("processed")
    publish_event(nats_of_module, LINK_ADDED, event, msg_id=f"{event['event_id']}-1")
    publish_event(nats_of_module, LINK_ADDED, event, msg_id=f"{event['event_id']}-2")  # same event again
    assert wait_until(lambda: consumed("processed") >= processed_before + 2)
    assert len([found for found in read_events(nats_of_module, LINK_CHECKS_STREAM.name, LINK_CHECKED)
                if found["username"] == user]) == 1


def test_an_event_that_can_never_be_checked_is_rejected_not_retried(checker, nats_of_module):
    rejected_before = consumed("rejected")
    user = unique_username()
    publish_event(nats_of_module, LINK_ADDED, link_event(user, "ftp://files.example/x"))
    assert wait_until(lambda: consumed("rejected") >= rejected_before + 1)
    assert [event for event in read_events(nats_of_module, LINK_CHECKS_STREAM.name, LINK_CHECKED)
            if event["username"] == user] == []


def test_a_timeout_429_or_5xx_publishes_no_verdict_and_is_retried_until_conclusive(checker, nats_of_module, target):
    user = unique_username()
    flaky, limited = target.url(f"/flaky/2/{user}"), target.url(f"/limited/{user}")  # 503 503 200; 429 200
    for url in (flaky, limited):
        publish_event(nats_of_module, LINK_ADDED, link_event(user, url))
    events = wait_for_events(nats_of_module, LINK_CHECKS_STREAM.name, LINK_CHECKED, 2, username=user)
    # One event per link, the conclusive one: had an inconclusive answer been published first, it would be the
    # one in the stream (a retry's event has the same id, and JetStream drops it as a duplicate).
    assert sorted((event["url"], event["status"], event["http_status"]) for event in events) == sorted([
        (flaky, "valid", 200), (limited, "valid", 200)])
    assert len(target.requests_to(f"/flaky/2/{user}")) == 3 and len(target.requests_to(f"/limited/{user}")) == 2
    first, second = target.requests_to(f"/limited/{user}")
    assert second.at - first.at >= 0.95  # Retry-After: 1
    [flaky_event] = [event for event in events if event["url"] == flaky]
    assert flaky_event["request_id"] == flaky_event["_headers"]["X-Request-Id"]  # the retry joined the request

    # Each inconclusive attempt was announced on its own subject, once, with the request it belongs to.
    attempts = attempt_events(nats_of_module, user)
    assert sorted((event["url"], event["attempts"], event["http_status"], event["failure"]) for event in attempts) == [
        (flaky, 1, 503, "http_5xx"), (flaky, 2, 503, "http_5xx"), (limited, 1, 429, "http_429")]
    for event in attempts:
        assert event["event_type"] == "link_check_inconclusive" and event["author"] == "link-checker"
        assert event["_headers"]["Nats-Msg-Id"] == event["event_id"]
        assert event["request_id"] == event["_headers"]["X-Request-Id"]
        assert event["given_up"] is False and event["next_attempt_at"] > event["attempted_at"]


def test_a_check_that_keeps_timing_out_is_given_up_with_no_verdict(checker, nats_of_module, target):
    user = unique_username()
    given_up_before = sample("delinkcious_link_checks_given_up_total", reason="timeout")
    timeouts_before = sample("delinkcious_link_checks_inconclusive_total", reason="timeout")
    publish_event(nats_of_module, LINK_ADDED, link_event(user, target.url(f"/slow/{user}")))
    assert wait_until(lambda: sample("delinkcious_link_checks_given_up_total", reason="timeout") > given_up_before,
                      timeout=15)
    assert len(target.requests_to(f"/slow/{user}")) == 3  # LINK_CHECKER_MAX_ATTEMPTS
    assert sample("delinkcious_link_checks_inconclusive_total", reason="timeout") >= timeouts_before + 3
    assert checked_events(nats_of_module, user) == []
    attempts = wait_for_events(nats_of_module, LINK_CHECKS_STREAM.name, LINK_CHECK_INCONCLUSIVE, 3, username=user)
    assert [(event["attempts"], event["failure"], event["given_up"], event["next_attempt_at"] is None)
            for event in sorted(attempts, key=lambda event: event["attempts"])] == [
        (1, "timeout", False, False), (2, "timeout", False, False), (3, "timeout", True, True)]


def test_readiness_and_metrics(checker, nats_of_module, target):
    _runtime, app = checker
    client = app.test_client()
    readiness = client.get("/healthz/readiness")
    assert readiness.status_code == 200 and readiness.get_json()["status"] == "ready"
    checks = {check["name"]: check for check in readiness.get_json()["checks"]}
    assert set(checks) >= {"redis", "nats", "checker_network"}
    assert checks["checker_network"]["ok"] and checks["checker_network"]["critical"] is False
    assert checks["checker_network"]["detail"]["state"] == "healthy"
    liveness = {check["name"] for check in client.get("/healthz/liveness").get_json()["checks"]}
    assert liveness >= {"consumers", "retry_workers", "checker_watch"}

    user = unique_username()
    publish_event(nats_of_module, LINK_ADDED, link_event(user, target.url(f"/missing/{user}")))
    wait_for_events(nats_of_module, LINK_CHECKS_STREAM.name, LINK_CHECKED, 1, username=user)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'delinkcious_link_checks_total{result="invalid",service="link-checker",source="fetched"}' in text
    assert 'delinkcious_link_check_duration_seconds_bucket{le="0.05",result="valid",service="link-checker"}' in text
    assert 'delinkcious_consumer_pending_messages{consumer="link-checker",service="link-checker"}' in text
    assert 'delinkcious_link_checker_outage{service="link-checker"} 0.0' in text
    assert 'delinkcious_link_check_retries_pending{service="link-checker"}' in text


def test_with_the_link_service_a_link_goes_from_pending_to_checked(checker, service_environment, nats_of_module,
                                                                    target):
    headers = service_environment.caller_headers()
    user = unique_username()
    with service_environment.running(LINK, nats_url=nats_of_module) as (_runtime, app):
        client = app.test_client()
        for path in (f"/ok/{user}", f"/missing/{user}"):
            created = client.post(f"/v1/users/{user}/links", json={"url": target.url(path), "title": "t"},
                                  headers=headers)
            assert created.status_code == 201 and created.get_json()["status"] == "pending"

        def statuses() -> dict[str, tuple[str, int | None]]:
            links = client.get(f"/v1/users/{user}/links", headers=headers).get_json()["links"]
            return {link["url"]: (link["status"], link.get("http_status")) for link in links}

        expected = {target.url(f"/ok/{user}"): ("valid", 200), target.url(f"/missing/{user}"): ("invalid", 404)}
        assert wait_until(lambda: statuses() == expected, timeout=15), statuses()


def test_with_the_link_service_an_inconclusive_link_keeps_its_status_and_shows_the_attempts(
        checker, service_environment, nats_of_module, target):
    headers = service_environment.caller_headers()
    user = unique_username()
    slow = target.url(f"/slow/{user}")
    with service_environment.running(LINK, nats_url=nats_of_module) as (_runtime, app):
        client = app.test_client()
        created = client.post(f"/v1/users/{user}/links", json={"url": slow, "title": "t"}, headers=headers)
        assert created.status_code == 201

        def link() -> dict[str, Any]:
            return client.get(f"/v1/users/{user}/links", headers=headers).get_json()["links"][0]

        # Three attempts (LINK_CHECKER_MAX_ATTEMPTS), all timed out: given up, and still pending.
        assert wait_until(lambda: (link()["inconclusive_check"] or {}).get("given_up"), timeout=15), link()
        shown = link()
        assert (shown["status"], shown["checked_at"], shown["http_status"]) == ("pending", None, None)
        attempt = shown["inconclusive_check"]
        assert (attempt["attempts"], attempt["failure"], attempt["next_attempt_at"]) == (3, "timeout", None)
        assert attempt["reason"].startswith("timed out") and attempt["attempted_at"].endswith("Z")
