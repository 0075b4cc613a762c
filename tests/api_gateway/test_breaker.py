"""The gateway's circuit breaker: calls through it run concurrently, and it opens, half-opens and closes as
configured. Time is a clock the test moves; concurrency is arranged with events, never with sleeps."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from delinkcious.api_gateway.app import DEFINITION
from delinkcious.api_gateway.downstream import (
    BreakerOpen,
    CircuitBreaker,
    DownstreamError,
    NewsDependency,
    RestDependency,
)
from delinkcious.kit.core.errors import InvalidInput, Unavailable


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
                "oauth_client_secret": "secret", "breaker_failures": 2, "breaker_reset_seconds": 30,
                "breaker_max_reset_seconds": 30}
    with service_environment.running(DEFINITION, **settings) as (_, app):
        client = app.test_client()
        for _ in range(2):
            assert client.get("/v1/links", headers={"Authorization": "Bearer t"}).status_code == 503
        checks = {check["name"]: check for check in client.get("/healthz/readiness").get_json()["checks"]}
    assert checks["dependencies"]["detail"] == {"link": "open", "user": "closed", "social-graph": "closed",
                                                "news": "closed"}


def test_failed_probes_double_the_open_period_up_to_the_maximum_and_a_success_resets_it(clock):
    breaker = CircuitBreaker("link", failures=2, reset_s=1, max_reset_s=4,
                             is_failure=lambda error: isinstance(error, Failed), clock=clock)
    for _ in range(2):
        with pytest.raises(Failed):
            breaker.call(fail)
    waits = []
    for _ in range(4):  # each probe fails: the breaker stays open for 1, then 2, 4, 4 seconds
        with pytest.raises(BreakerOpen) as refused:
            breaker.call(never_called)
        waits.append(refused.value.retry_after_s)
        clock.now += refused.value.retry_after_s - 0.01
        with pytest.raises(BreakerOpen):  # not a moment early
            breaker.call(never_called)
        clock.now += 0.01
        with pytest.raises(Failed):
            breaker.call(fail)  # the probe
    assert waits == [1, 2, 4, 4]
    clock.now += 4
    assert breaker.call(lambda: "back") == "back"
    assert breaker.state == "closed"
    for _ in range(2):  # opened again later: the open period starts from reset_s again
        with pytest.raises(Failed):
            breaker.call(fail)
    with pytest.raises(BreakerOpen) as refused:
        breaker.call(never_called)
    assert refused.value.retry_after_s == 1


def test_the_gateways_defaults_call_a_dependency_again_within_two_seconds():
    fields = DEFINITION.settings_class.model_fields
    assert fields["breaker_reset_seconds"].default <= 1 and fields["breaker_max_reset_seconds"].default <= 2


def test_a_dependencys_4xx_answers_about_one_clients_request_never_open_its_breaker(internal):
    """Ten refusals of user A's request (a bad filter: the link service's 400) leave the breaker closed: user B's
    next call goes through."""
    internal.answer("GET", "/v1/users/a/links", 400, {"message": "title_regex: invalid", "code": "invalid_input",
                                                      "field": "title_regex"})
    internal.answer("GET", "/v1/users/b/links", 200, {"links": [], "next_token": None})
    dependency = RestDependency("link", internal.url, "caller-token", timeout_s=5, failures=2, reset_s=10)
    for _ in range(10):
        with pytest.raises(DownstreamError) as refused:
            dependency.call("GET", "/v1/users/a/links", params={"title_regex": "("})
        assert refused.value.status == 400 and refused.value.details == {"field": "title_regex"}
    assert dependency.call("GET", "/v1/users/b/links") == (200, {"links": [], "next_token": None})
    assert dependency.state == "closed"
    dependency.close()


class RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_news_answers_about_the_request_are_the_clients_400_and_never_open_its_breaker(monkeypatch):
    news = NewsDependency("127.0.0.1:1", "caller-token", timeout_s=1, failures=2, reset_s=10)
    answers = iter([RpcError(grpc.StatusCode.OUT_OF_RANGE, "start_token: is not a valid page token")] * 5
                   + [RpcError(grpc.StatusCode.INVALID_ARGUMENT, "limit: too large")] * 5
                   + [RpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")] * 2)

    def call(*_args: object, **_kwargs: object) -> None:
        raise next(answers)

    monkeypatch.setattr(news._client, "call", call)
    for expected_field in ["start_token"] * 5 + ["limit"] * 5:
        with pytest.raises(InvalidInput) as refused:
            news.get_news("ann", "token", 10)
        assert refused.value.field == expected_field
    assert news.state == "closed"
    for _ in range(2):  # the server failing is what counts
        with pytest.raises(Unavailable):
            news.get_news("ann", "", 10)
    assert news.state == "open"
