"""Inconclusive checks on the real Redis: they publish nothing, wait in the retry queue with back-off, and
are checked again by the retry workers until a conclusive answer (published) or until they are given up
(nothing published, the link keeps its status). Timings are the test's own: 0.1 s back-off, 0.3 s attempts."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from delinkcious.contracts.events import LINK_CHECKED
from delinkcious.kit.messaging.stopping import StopSignal
from delinkcious.link_checker.domain import HTTP_5XX, HTTP_429, TIMEOUT, CheckRequest, RetryPolicy
from delinkcious.link_checker.service import Deferred, GivenUp, PendingCheck, Published, retry_key
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
def test_an_inconclusive_answer_publishes_nothing_and_is_scheduled_again(make_service, target, redis_client,
                                                                          route, failure, status):
    service, published, queue = make_service()
    request = CheckRequest("alice", target.url(unique(route)), "2026-01-02T03:04:05Z")
    result = service.check_link(request, source_event_id="e-1")
    assert isinstance(result, Deferred) and published == []
    assert (result.inconclusive.failure, result.inconclusive.http_status, result.attempts) == (failure, status, 1)
    assert (0.05 <= result.retry_in_s <= 0.1) if route != "/limited" else result.retry_in_s >= 1.0  # Retry-After
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
    assert isinstance(first, Deferred) and published == []
    recorded = run_workers(service, queue)
    assert wait_until(lambda: published, timeout=10)
    assert [type(result).__name__ for result in recorded] == ["Deferred", "Published"]
    done = recorded[-1]
    assert done.verdict.status == "valid" and done.attempts == 3 and done.source == "fetched"
    [event] = published
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
    assert wait_until(lambda: published, timeout=10)
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
    assert published == [] and queue.size() == 0 and len(target.requests_to(path)) == 3


def test_owners_of_one_url_share_an_inconclusive_answer_for_less_than_a_back_off(make_service, target):
    # Back-off from 2 s, so at least 1 s (jitter): the shared answer is kept 0.5 s.
    service, published, queue = make_service(retry_policy=RetryPolicy(
        max_attempts=4, backoff_initial_s=2.0, backoff_max_s=4.0, max_age_s=30))
    url = target.url(unique("/always-503"))
    results = [service.check_link(CheckRequest(owner, url, None), source_event_id=f"e-{owner}")
               for owner in ("alice", "bob")]
    assert [result.source for result in results] == ["fetched", "cached"]
    assert len(target.requests_to(url.split(str(target.port))[1])) == 1
    assert queue.size() == 2 and published == []  # one pending check per owner
    time.sleep(0.6)  # past the shared answer: asked again
    assert service.check_link(CheckRequest("carol", url, None), source_event_id="e-carol").source == "fetched"


def test_a_conclusive_answer_to_a_newer_event_answers_the_pending_check(make_service, target):
    service, published, queue = make_service()
    request = CheckRequest("alice", target.url(unique("/flaky/1")), None)  # 503, then 200
    assert isinstance(service.check_link(request, source_event_id="e-1"), Deferred) and queue.size() == 1
    time.sleep(0.06)  # past the shared inconclusive answer
    assert isinstance(service.check_link(request, source_event_id="e-2"), Published) and queue.size() == 0
    assert len(published) == 1


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
    assert isinstance(result, Deferred) and result.superseded and published == []
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
