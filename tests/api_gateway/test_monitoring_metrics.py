"""The gateway's own metrics (docs/metrics.md): the circuit breaker's state per dependency and the requests its rate
limits refuse. Both series exist from start-up, in-process and behind gunicorn's workers, so an alert's rate() or
max() sees the first change."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
from delinkcious.api_gateway.downstream import BREAKER_STATE_VALUES, BreakerOpen, CircuitBreaker
from delinkcious.api_gateway.rate_limits import RateLimited, RateLimiter
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

BREAKER_STATE = "delinkcious_circuit_breaker_state"
REJECTIONS = "delinkcious_rate_limit_rejections_total"
GATEWAY = "api-gateway"


class Failed(Exception):
    pass


class Interrupted(BaseException):
    """What a worker's shutdown raises through a call: neither a success nor a failure."""


def fail() -> None:
    raise Failed()


def breaker_state(dependency: str) -> float | None:
    return REGISTRY.get_sample_value(BREAKER_STATE, {"service": GATEWAY, "dependency": dependency})


def rejections(limit: str) -> float:
    return REGISTRY.get_sample_value(REJECTIONS, {"service": GATEWAY, "limit": limit})


@pytest.fixture
def dependency() -> str:
    """A dependency name of the test's own, so that its gauge is the test's alone."""
    return f"dependency-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def breaker(dependency, clock) -> CircuitBreaker:
    return CircuitBreaker(dependency, failures=2, reset_s=10, is_failure=lambda error: isinstance(error, Failed),
                          clock=clock)


def test_the_state_values_are_the_documented_ones():
    assert BREAKER_STATE_VALUES == {"closed": 0, "half-open": 1, "open": 2}


def test_a_new_breakers_state_is_closed_from_the_start(breaker, dependency):
    assert breaker_state(dependency) == 0


def test_the_gauge_follows_every_change_of_the_breakers_state(breaker, dependency, clock):
    with pytest.raises(Failed):
        breaker.call(fail)
    assert breaker_state(dependency) == 0  # one failure of two: still closed
    with pytest.raises(Failed):
        breaker.call(fail)
    assert breaker.state == "open" and breaker_state(dependency) == 2
    with pytest.raises(BreakerOpen):
        breaker.call(fail)
    assert breaker_state(dependency) == 2

    clock.now += 10
    probe_started, probe_may_end = threading.Event(), threading.Event()

    def probe() -> str:
        probe_started.set()
        assert probe_may_end.wait(10)
        return "back"

    with ThreadPoolExecutor(max_workers=1) as executor:
        call = executor.submit(breaker.call, probe)
        assert probe_started.wait(10)
        assert breaker.state == "half-open" and breaker_state(dependency) == 1
        probe_may_end.set()
        assert call.result(timeout=10) == "back"
    assert breaker.state == "closed" and breaker_state(dependency) == 0


def test_a_failed_or_interrupted_probe_shows_it_open_again(breaker, dependency, clock):
    for _ in range(2):
        with pytest.raises(Failed):
            breaker.call(fail)
    clock.now += 10
    with pytest.raises(Failed):
        breaker.call(fail)  # the probe fails
    assert breaker_state(dependency) == 2
    clock.now += 20

    def interrupted() -> None:
        assert breaker_state(dependency) == 1  # the probe is in flight
        raise Interrupted()

    with pytest.raises(Interrupted):
        breaker.call(interrupted)
    assert breaker.state == "open" and breaker_state(dependency) == 2


@pytest.fixture
def limiter(redis_url) -> Iterator[RateLimiter]:
    client = redis.Redis.from_url(redis_url)
    yield RateLimiter(client, per_address="2/minute", per_user="1/minute", key_prefix=f"test-{uuid.uuid4().hex}")
    client.close()


def test_each_refusal_counts_against_the_limit_that_refused_it(limiter):
    before = {limit: rejections(limit) for limit in ("per_address", "per_user")}
    assert before["per_address"] is not None and before["per_user"] is not None  # created with the limiter
    limiter.check("10.0.0.1", "ann")
    with pytest.raises(RateLimited):
        limiter.check("10.0.0.2", "ann")  # ann's one request a minute is used up
    limiter.check("10.0.0.1")
    with pytest.raises(RateLimited):
        limiter.check("10.0.0.1")  # the address's two
    with pytest.raises(RateLimited):
        limiter.check_user("ann")
    assert {limit: rejections(limit) - before[limit] for limit in before} == {"per_address": 1, "per_user": 2}


def test_the_served_gateway_exports_both_series_from_start_up(served_gateway):
    """Under gunicorn every worker writes its own samples: the series made at start-up are on /metrics before any
    request, and a worker's refusal is added in."""

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        page = requests.get(f"{served.admin_url}/metrics", timeout=10).text
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(page) for sample in family.samples
                if sample.name in (BREAKER_STATE, REJECTIONS)}

    served = served_gateway(RATE_LIMIT_PER_ADDRESS="1/minute")
    states = {labels: value for (name, labels), value in samples().items() if name == BREAKER_STATE}
    assert states == {(("dependency", dependency), ("service", GATEWAY)): 0.0
                      for dependency in ("link", "user", "social-graph", "news")}
    refused = {labels: value for (name, labels), value in samples().items() if name == REJECTIONS}
    assert refused == {(("limit", "per_address"), ("service", GATEWAY)): 0.0,
                       (("limit", "per_user"), ("service", GATEWAY)): 0.0}

    assert [served.request("GET", "/v1/me").status_code for _ in range(2)] == [401, 429]
    assert samples()[(REJECTIONS, (("limit", "per_address"), ("service", GATEWAY)))] == 1.0
