"""The gateway's circuit breaker: calls through it run concurrently, and it opens, half-opens and closes as
configured. Time is a clock the test moves; concurrency is arranged with events, never with sleeps."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from delinkcious.api_gateway.app import DEFINITION
from delinkcious.api_gateway.downstream import BreakerOpen, CircuitBreaker, DownstreamError, RestDependency


class Failed(Exception):
    pass


@pytest.fixture
def breaker(clock):
    return CircuitBreaker("link", failures=3, reset_s=10, is_failure=lambda error: isinstance(error, Failed),
                          clock=clock)


def fail() -> None:
    raise Failed()


def never_called() -> None:
    raise AssertionError("an open breaker made the call")


def test_a_slow_call_does_not_hold_up_another_to_the_same_dependency(internal):
    internal.answer("GET", "/slow", 200, {"slow": True})
    internal.answer("GET", "/fast", 200, {"fast": True})
    slow = internal.hold("GET", "/slow")
    dependency = RestDependency("link", internal.url, "caller-token", timeout_s=60, failures=3, reset_s=10)
    with ThreadPoolExecutor(max_workers=1) as executor:
        slow_call = executor.submit(dependency.call, "GET", "/slow")
        assert slow.arrived.wait(10)
        # The slow call is in flight (held by the service): another call to the same dependency goes through.
        assert dependency.call("GET", "/fast") == (200, {"fast": True})
        assert not slow_call.done()
        slow.release()
        assert slow_call.result(timeout=30) == (200, {"slow": True})
    dependency.close()


def test_the_breaker_opens_after_n_consecutive_failures_and_answers_at_once(breaker, clock):
    for _ in range(2):
        with pytest.raises(Failed):
            breaker.call(fail)
    assert breaker.call(lambda: "ok") == "ok"  # a success in between: the count starts again
    for _ in range(2):
        with pytest.raises(Failed):
            breaker.call(fail)
    assert breaker.state == "closed"
    with pytest.raises(Failed):
        breaker.call(fail)
    assert breaker.state == "open"
    with pytest.raises(BreakerOpen) as refused:
        breaker.call(never_called)
    assert refused.value.retry_after_s == 10
    clock.now += 9.5
    with pytest.raises(BreakerOpen) as refused:
        breaker.call(never_called)
    assert refused.value.retry_after_s == 1


def test_after_the_reset_one_trial_call_half_opens_it(breaker, clock):
    for _ in range(3):
        with pytest.raises(Failed):
            breaker.call(fail)
    clock.now += 10
    trial_started, trial_may_end = threading.Event(), threading.Event()

    def trial() -> str:
        trial_started.set()
        assert trial_may_end.wait(10)
        return "recovered"

    with ThreadPoolExecutor(max_workers=1) as executor:
        trial_call = executor.submit(breaker.call, trial)
        assert trial_started.wait(10)
        assert breaker.state == "half-open"
        with pytest.raises(BreakerOpen):  # one trial at a time: the others are refused at once
            breaker.call(never_called)
        trial_may_end.set()
        assert trial_call.result(timeout=10) == "recovered"
    assert breaker.state == "closed"
    assert breaker.call(lambda: "ok") == "ok"


def test_a_failed_trial_opens_it_for_another_reset_period(breaker, clock):
    for _ in range(3):
        with pytest.raises(Failed):
            breaker.call(fail)
    clock.now += 10
    with pytest.raises(Failed):
        breaker.call(fail)  # the trial
    assert breaker.state == "open"
    with pytest.raises(BreakerOpen) as refused:
        breaker.call(never_called)
    assert refused.value.retry_after_s == 10
    clock.now += 10
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state == "closed"


def test_only_failures_count(breaker):
    for _ in range(5):
        with pytest.raises(ValueError):
            breaker.call(lambda: int("not a number"))  # an exception that is not a dependency failure
    assert breaker.state == "closed"


def test_the_dependencys_own_refusals_never_open_its_breaker(internal):
    internal.answer("GET", "/missing", 404, {"message": "no such thing", "code": "not_found"})
    dependency = RestDependency("link", internal.url, "caller-token", timeout_s=5, failures=2, reset_s=10)
    for _ in range(4):
        with pytest.raises(DownstreamError):
            dependency.call("GET", "/missing")
    assert dependency.state == "closed"
    assert len(internal.asked("GET", "/missing")) == 4
    dependency.close()


def test_readiness_reports_each_breakers_state(service_environment, internal):
    internal.answer("POST", "/v1/tokens/verify", 200, {"user": {"username": "ann"}, "token": {}})
    internal.answer("GET", "/v1/users/ann/links", 503, {"message": "down", "code": "unavailable"})
    settings = {"link_service_url": internal.url, "user_service_url": internal.url,
                "social_graph_service_url": internal.url, "news_grpc_address": "127.0.0.1:1",
                "caller_token": "gateway-caller-token", "session_secret": "s" * 32, "oauth_client_id": "client",
                "oauth_client_secret": "secret", "breaker_failures": 2, "breaker_reset_seconds": 30}
    with service_environment.running(DEFINITION, **settings) as (_, app):
        client = app.test_client()
        for _ in range(2):
            assert client.get("/v1/links", headers={"Authorization": "Bearer t"}).status_code == 503
        checks = {check["name"]: check for check in client.get("/healthz/readiness").get_json()["checks"]}
    assert checks["dependencies"]["detail"] == {"link": "open", "user": "closed", "social-graph": "closed",
                                                "news": "closed"}
