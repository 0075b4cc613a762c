"""Inconclusive checks on the real Redis: they publish no verdict, announce each attempt (a link-check-inconclusive
event, which the link service records without changing the status; none while the checker doubts its own network),
wait in the retry queue with back-off, and are checked again by the retry workers until a conclusive answer
(published) or until they are given up (no verdict, the link keeps its status). Timings are the test's own: 0.1 s
back-off, 0.3 s attempts."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from delinkcious.contracts.events import LINK_CHECK_INCONCLUSIVE, LINK_CHECKED, derived_event_id
from delinkcious.kit.core.clock import parse_timestamp
from delinkcious.kit.messaging.stopping import StopSignal
from delinkcious.link_checker.domain import HTTP_5XX, HTTP_429, TIMEOUT, CheckRequest, OutageRule, RetryPolicy
from delinkcious.link_checker.service import Deferred, GivenUp, NetworkWatch, PendingCheck, Published, retry_key
from delinkcious.link_checker.workers import RetryWorkers

from tests.link_checker.target import SilentServer
from tests.support.jetstream import wait_until


def unique(path: str) -> str:
    return f"{path}/{uuid.uuid4().hex[:10]}"


class Recorded(list):
    def __call__(self, pending: PendingCheck, result: Any) -> None:
        self.append(result)


@pytest.fixture
def run_workers() -> Iterator[Any]:
    """Starts RetryWorkers for a service; stops them (the stop signal) at the end of the test."""
    stops: list[tuple[StopSignal, RetryWorkers]] = []

    def run(service: Any, queue: Any, *, stopping: StopSignal | None = None, lease_s: float = 5.0) -> Recorded:
        recorded = Recorded()
        signal = stopping or StopSignal()
        workers = RetryWorkers(service, queue, service.watch, concurrency=2, poll_interval_s=0.02, lease_s=lease_s,
                               busy_delay_s=0.1, stopping=signal, record=recorded)
        workers.start()
        stops.append((signal, workers))
        return recorded

    yield run
    for signal, workers in stops:
        signal.request()
        workers.join(5)


@pytest.mark.parametrize("route, failure, status", [
    ("/slow", TIMEOUT, None), ("/always-503", HTTP_5XX, 503), ("/error", HTTP_5XX, 500), ("/limited", HTTP_429, 429),
])
def test_an_inconclusive_answer_publishes_no_verdict_announces_the_attempt_and_is_scheduled_again(
        make_service, target, redis_client, route, failure, status):
    service, published, queue = make_service()
    request = CheckRequest("alice", target.url(unique(route)), "2026-01-02T03:04:05Z")
    result = service.check_link(request, source_event_id="e-1")
    assert isinstance(result, Deferred) and published.verdicts == []
    assert (result.inconclusive.failure, result.inconclusive.http_status, result.attempts) == (failure, status, 1)
    assert (0.05 <= result.retry_in_s <= 0.1) if route != "/limited" else result.retry_in_s >= 1.0  # Retry-After

    [event] = published
    assert result.announced is event and event.subject == LINK_CHECK_INCONCLUSIVE
    assert (event.event_type, event.author) == ("link_check_inconclusive", "link-checker")
    # Its id derives from the link event's and the attempt's number: a redelivery announces the same event.
    assert event.event_id == derived_event_id("e-1", "link-checker:attempt:1") != derived_event_id("e-1", "link-checker")
    data = event.data
    assert (data["username"], data["url"], data["failure"], data["http_status"], data["attempts"], data["given_up"],
            parse_timestamp(data["link_created_at"])) == (
        "alice", request.url, failure, status, 1, False, parse_timestamp("2026-01-02T03:04:05Z"))
    assert data["reason"] == result.inconclusive.reason and data["reason"]
    waits = parse_timestamp(data["next_attempt_at"]) - parse_timestamp(data["attempted_at"])
    assert abs(waits.total_seconds() - result.retry_in_s) < 0.1
    assert queue.size() == 1
    time.sleep(result.retry_in_s + 0.05)
    key, pending = queue.take_due(lease_s=5)
    assert key == retry_key(request)
    assert (pending.request, pending.source_event_id, pending.attempts, pending.last_failure) == (
        request, "e-1", 1, failure)


def test_404_publishes_invalid_at_once_and_nothing_waits(make_service, target):
    service, published, queue = make_service()
    result = service.check_link(CheckRequest("alice", target.url(unique("/missing")), None), source_event_id="e-1")
    assert isinstance(result, Published) and result.verdict.status == "invalid" and result.verdict.http_status == 404
    assert [event.subject for event in published] == [LINK_CHECKED] and published[0].data["reason"] == "HTTP 404"
    assert queue.size() == 0


def test_the_retry_workers_check_again_until_the_answer_is_conclusive(make_service, target, run_workers):
    service, published, queue = make_service()
    path = unique("/flaky/2")  # 503, 503, then 200
    first = service.check_link(CheckRequest("alice", target.url(path), None), source_event_id="e-1")
    assert isinstance(first, Deferred) and published.verdicts == []
    recorded = run_workers(service, queue)
    assert wait_until(lambda: len(recorded) == 2, timeout=10)
    assert [type(result).__name__ for result in recorded] == ["Deferred", "Published"]
    done = recorded[-1]
    assert done.verdict.status == "valid" and done.attempts == 3 and done.source == "fetched"
    # Each inconclusive attempt was announced, in order, before the verdict.
    assert [event.subject for event in published] == [LINK_CHECK_INCONCLUSIVE, LINK_CHECK_INCONCLUSIVE, LINK_CHECKED]
    assert [event.data["attempts"] for event in published.attempts] == [1, 2]
    assert len({event.event_id for event in published}) == 3
    [event] = published.verdicts
    assert (event.data["username"], event.data["status"], event.data["http_status"]) == ("alice", "valid", 200)
    requests = target.requests_to(path)
    assert len(requests) == 3
    gaps = [later.at - earlier.at for earlier, later in zip(requests, requests[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # back-off: 0.1 s then 0.2 s, each with up to half of jitter
    assert queue.size() == 0


def test_a_retry_after_is_honoured_before_the_next_attempt(make_service, target, run_workers):
    service, published, queue = make_service()
    path = unique("/limited")  # 429 with Retry-After: 1, then 200
    service.check_link(CheckRequest("alice", target.url(path), None), source_event_id="e-1")
    run_workers(service, queue)
    assert wait_until(lambda: published.verdicts, timeout=10)
    first, second = target.requests_to(path)
    assert second.at - first.at >= 0.95


def test_a_check_that_stays_inconclusive_is_given_up_without_a_verdict(make_service, target, run_workers):
    service, published, queue = make_service(retry_policy=RetryPolicy(
        max_attempts=3, backoff_initial_s=0.05, backoff_max_s=0.1, max_age_s=30))
    path = unique("/always-503")
    service.check_link(CheckRequest("alice", target.url(path), None), source_event_id="e-1")
    recorded = run_workers(service, queue)
    assert wait_until(lambda: any(isinstance(result, GivenUp) for result in recorded), timeout=10)
    given_up = recorded[-1]
    assert given_up.attempts == 3 and given_up.why == "3 attempts, all inconclusive"
    assert given_up.inconclusive.reason == "HTTP 503"
    time.sleep(0.3)
    assert published.verdicts == [] and queue.size() == 0 and len(target.requests_to(path)) == 3
    # Every attempt was announced; the last one says the check was given up.
    assert [(event.data["attempts"], event.data["given_up"]) for event in published.attempts] == [
        (1, False), (2, False), (3, True)]
    assert given_up.announced is published.attempts[-1] and given_up.announced.data["next_attempt_at"] is None


def test_owners_of_one_url_share_an_inconclusive_answer_for_less_than_a_back_off(make_service, target):
    # Back-off from 2 s, so at least 1 s (jitter): the shared answer is kept 0.5 s.
    service, published, queue = make_service(retry_policy=RetryPolicy(
        max_attempts=4, backoff_initial_s=2.0, backoff_max_s=4.0, max_age_s=30))
    url = target.url(unique("/always-503"))
    results = [service.check_link(CheckRequest(owner, url, None), source_event_id=f"e-{owner}")
               for owner in ("alice", "bob")]
    assert [result.source for result in results] == ["fetched", "cached"]
    assert len(target.requests_to(url.split(str(target.port))[1])) == 1
    assert queue.size() == 2 and published.verdicts == []  # one pending check per owner
    # Each owner's link is told of the attempt, made once, at the same time.
    assert [event.data["username"] for event in published.attempts] == ["alice", "bob"]
    assert len({event.data["attempted_at"] for event in published.attempts}) == 1
    time.sleep(0.6)  # past the shared answer: asked again
    assert service.check_link(CheckRequest("carol", url, None), source_event_id="e-carol").source == "fetched"


def test_a_conclusive_answer_to_a_newer_event_answers_the_pending_check(make_service, target):
    service, published, queue = make_service()
    request = CheckRequest("alice", target.url(unique("/flaky/1")), None)  # 503, then 200
    assert isinstance(service.check_link(request, source_event_id="e-1"), Deferred) and queue.size() == 1
    time.sleep(0.06)  # past the shared inconclusive answer
    assert isinstance(service.check_link(request, source_event_id="e-2"), Published) and queue.size() == 0
    assert len(published.verdicts) == 1


def test_a_retry_in_progress_is_handed_back_at_once_when_the_process_stops(make_service):
    stopping = StopSignal()
    service, _published, queue = make_service(attempt_timeout_s=30.0, stopping=stopping)
    with SilentServer() as silent:
        request = CheckRequest("alice", silent.url(unique("/x")), None)
        queue.schedule(retry_key(request), PendingCheck(request, "e-1", "req-1", 1, service.clock(), "HTTP 503",
                                                        HTTP_5XX), delay_s=0, keep_s=60)
        workers = RetryWorkers(service, queue, service.watch, concurrency=1, poll_interval_s=0.02, lease_s=60,
                               busy_delay_s=1, stopping=stopping, record=Recorded())
        workers.start()
        assert wait_until(lambda: silent.connections == 1, timeout=5)  # the attempt waits on the silent host
        started = time.monotonic()
        threading.Thread(target=stopping.request).start()
        workers.join(5)
        assert time.monotonic() - started < 1.0  # not the attempt's 30 s
        taken = queue.take_due(lease_s=60)  # handed back due at once, not after its 60 s lease
        assert taken is not None and taken[1].attempts == 1 and taken[1].request_id == "req-1"


def test_a_retry_never_replaces_a_newer_events_check_nor_revives_an_answered_one(make_service, target):
    service, published, queue = make_service()
    request = CheckRequest("alice", target.url(unique("/always-503")), None)
    older = PendingCheck(request, "e-old", None, 2, service.clock(), "HTTP 503", HTTP_5XX)
    newer = PendingCheck(request, "e-new", None, 1, service.clock(), "HTTP 503", HTTP_5XX)
    assert queue.schedule(retry_key(request), newer, delay_s=0, keep_s=60)

    result = service.check_link(request, source_event_id="e-old", pending=older)  # the older retry, in flight
    assert isinstance(result, Deferred) and result.superseded and published.verdicts == []
    key, kept = queue.take_due(lease_s=5)
    assert (kept.source_event_id, kept.attempts) == ("e-new", 1)

    queue.discard(key)  # answered meanwhile
    time.sleep(0.06)  # past the shared inconclusive answer
    assert service.check_link(request, source_event_id="e-new", pending=newer).superseded
    assert queue.size() == 0


def test_giving_up_a_retry_leaves_a_newer_events_check_alone(make_service, target):
    service, _published, queue = make_service(retry_policy=RetryPolicy(max_attempts=2, backoff_initial_s=0.1,
                                                                       backoff_max_s=0.1))
    request = CheckRequest("alice", target.url(unique("/always-503")), None)
    older = PendingCheck(request, "e-old", None, 1, service.clock(), "HTTP 503", HTTP_5XX)
    newer = PendingCheck(request, "e-new", None, 1, service.clock(), "HTTP 503", HTTP_5XX)
    queue.schedule(retry_key(request), newer, delay_s=0, keep_s=60)
    assert isinstance(service.check_link(request, source_event_id="e-old", pending=older), GivenUp)
    assert queue.size() == 1 and queue.take_due(lease_s=5)[1].source_event_id == "e-new"


def test_nothing_is_announced_while_the_checker_doubts_its_own_network(make_service, target):
    """Once the checker suspects or has recognised an outage of its own, a failure says nothing about the link: the
    check waits for its next attempt, but its owner's link is not told."""
    # Nothing to probe: the first timeouts (three hosts) are declared an outage at once.
    watch = NetworkWatch(OutageRule(min_checks=3, threshold=0.8, min_hosts=3), lambda url: None,
                         probe_interval_s=60, probe_timeout_s=1)
    service, published, queue = make_service(watch=watch)
    for index, host in enumerate(("127.0.0.1", "localhost", "127.0.0.2")):
        request = CheckRequest(f"owner-{index}", target.url(unique("/slow"), host=host), None)
        assert isinstance(service.check_link(request, source_event_id=f"e-{index}"), Deferred)
    assert len(published.attempts) == 3  # before the outage is recognised, each attempt is the link's news
    watch.tick()
    assert watch.status().state == "outage" and watch.in_doubt
    late = CheckRequest("owner-late", target.url(unique("/always-503")), None)
    result = service.check_link(late, source_event_id="e-late")  # a check that was in flight, say
    assert isinstance(result, Deferred) and result.announced is None and queue.size() == 4
    assert [event.data["username"] for event in published] == ["owner-0", "owner-1", "owner-2"]
