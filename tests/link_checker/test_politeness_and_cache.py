"""Politeness per host and the result cache, on the real Redis, shared as replicas would share it."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from delinkcious.contracts.events import LINK_CHECKED, Event
from delinkcious.kit.observability.context import request_scope
from delinkcious.link_checker.domain import CheckRequest
from delinkcious.link_checker.redis_store import RedisHostThrottle
from delinkcious.link_checker.service import HostBusy

from tests.link_checker.conftest import fixed_resolver


def test_requests_to_one_host_are_spaced_and_other_hosts_are_not_delayed(redis_client, namespace):
    # Two throttles on one Redis stand for two replicas.
    replicas = [RedisHostThrottle(redis_client, interval_s=0.2, max_wait_s=5, namespace=namespace) for _ in range(2)]
    started = time.monotonic()
    times = []
    for index in range(4):
        replicas[index % 2].wait_turn("a.example")
        times.append(time.monotonic())
    assert all(later - earlier >= 0.18 for earlier, later in zip(times, times[1:]))
    before_other = time.monotonic()
    assert replicas[0].wait_turn("b.example") == 0.0
    assert time.monotonic() - before_other < 0.1
    assert times[-1] - started < 1.0


def test_a_turn_too_far_away_is_host_busy_and_reserves_nothing(redis_client, namespace):
    throttle = RedisHostThrottle(redis_client, interval_s=0.4, max_wait_s=0.2, namespace=namespace)
    throttle.wait_turn("busy.example")
    with pytest.raises(HostBusy):
        throttle.wait_turn("busy.example")
    time.sleep(0.4)
    assert throttle.wait_turn("busy.example") == 0.0  # the refused call did not push the queue back


def test_checks_of_one_host_are_at_least_the_interval_apart_at_the_server(make_checker, target):
    checker = make_checker(host_interval_s=0.3, resolver=fixed_resolver({"other.test": ["127.0.0.1"]}))
    suffix = uuid.uuid4().hex[:10]
    paths = [f"/ok/{suffix}/{index}" for index in range(3)]
    started = time.monotonic()
    for path in paths:
        checker.check(target.url(path))
    other_path = f"/ok/{suffix}/other"
    checker.check(f"http://other.test:{target.port}{other_path}")  # another host name: its own queue
    arrivals = [target.requests_to(path)[0].at for path in paths]
    assert all(later - earlier >= 0.28 for earlier, later in zip(arrivals, arrivals[1:]))
    assert target.requests_to(other_path)[0].at - arrivals[-1] < 0.2
    assert time.monotonic() - started < 1.5


def test_one_url_saved_by_many_owners_is_fetched_once_per_ttl(make_service, target):
    service, published, _retries = make_service(ttl_s=0.5)
    path = f"/ok/{uuid.uuid4().hex[:10]}"
    spellings = [target.url(path), target.url(path + "/").replace("http://", "HTTP://"), target.url(path)]
    outcomes = [service.check_link(CheckRequest(owner, url, None), source_event_id=f"{owner}-e")
                for owner, url in zip(("alice", "bob", "carol"), spellings)]
    assert [outcome.source for outcome in outcomes] == ["fetched", "cached", "cached"]
    assert len(target.requests_to(path)) == 1
    assert {outcome.checked_at for outcome in outcomes} == {outcomes[0].checked_at}
    assert [(event.subject, event.data["username"], event.data["url"], event.data["status"])
            for event in published] == [
        (LINK_CHECKED, owner, url, "valid") for owner, url in zip(("alice", "bob", "carol"), spellings)]

    time.sleep(0.6)  # the TTL ran out: fetched again
    again = service.check_link(CheckRequest("dave", target.url(path), None), source_event_id="d-e")
    assert again.source == "fetched" and len(target.requests_to(path)) == 2


def test_concurrent_checks_of_one_url_fetch_it_once(make_service, target):
    # HEAD 405 then GET, 0.2 s apart (politeness): the check takes a while, and the others wait for it.
    service, published, _retries = make_service(ttl_s=60, host_interval_s=0.2)
    path = f"/no-head/{uuid.uuid4().hex[:10]}"
    sources: list[str] = []

    def check(index: int) -> None:
        outcome = service.check_link(CheckRequest(f"user{index}", target.url(path), None),
                                     source_event_id=f"e{index}")
        sources.append(outcome.source)

    threads = [threading.Thread(target=check, args=(index,)) for index in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(sources) == ["cached"] * 4 + ["fetched"]
    assert [seen.method for seen in target.requests_to(path)] == ["HEAD", "GET"]
    assert len(published) == 5 and {event.data["status"] for event in published} == {"valid"}


def test_a_ttl_of_zero_fetches_every_time(make_service, target):
    service, _published, _retries = make_service(ttl_s=0)
    path = f"/ok/{uuid.uuid4().hex[:10]}"
    for owner in ("alice", "bob"):
        assert service.check_link(CheckRequest(owner, target.url(path), None), source_event_id=owner).source == "fetched"
    assert len(target.requests_to(path)) == 2


def test_the_published_event_is_the_link_services_contract(make_service, target):
    from delinkcious.link.events import check_result_from_event

    service, published, _retries = make_service(ttl_s=60)
    url = target.url(f"/missing/{uuid.uuid4().hex[:10]}")
    request = CheckRequest("alice", url, "2026-01-02T03:04:05.123456Z")
    with request_scope("req-1"):
        first = service.check_link(request, source_event_id="input-1")
        again = service.check_link(request, source_event_id="input-1")  # a redelivery
    assert first.event.event_id == again.event.event_id  # so JetStream and the link service drop it
    assert first.event.payload() | {"occurred_at": None} == again.event.payload() | {"occurred_at": None}
    payload = first.event.payload()
    assert {key: payload[key] for key in ("event_type", "author", "request_id", "username", "url", "status",
                                          "http_status", "reason", "link_created_at")} == {
        "event_type": "link_checked", "author": "link-checker", "request_id": "req-1", "username": "alice", "url": url,
        "status": "invalid", "http_status": 404, "reason": "HTTP 404",
        "link_created_at": "2026-01-02T03:04:05.123456Z"}
    result = check_result_from_event(Event.decode(LINK_CHECKED, first.event.encode()))
    assert (result.username, result.url, result.status, result.http_status, result.checked_at) == (
        "alice", url, "invalid", 404, first.checked_at)
    assert result.link_created_at.isoformat() == "2026-01-02T03:04:05.123456+00:00"
