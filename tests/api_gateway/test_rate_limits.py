"""The rate limiter's cost and its Redis connection, on a Redis of the test's own: one round trip per request
(counted with MONITOR), REDIS_PASSWORD honoured, and the gateway serving unlimited while Redis is down."""
from __future__ import annotations

import threading

import pytest
import redis
from delinkcious.api_gateway.app import DEFINITION

from tests.support.assertions import assert_error
from tests.support.stand_in import StandInService

TOKEN = "dlk_rate-limited-token"
END_OF_TEST = "end-of-test"


@pytest.fixture
def internal():
    service = StandInService()
    service.answer("POST", "/v1/tokens/verify", 200, {"user": {"username": "ann"}, "token": {}})
    service.answer("GET", "/v1/users/ann", 200, {"username": "ann", "email": None, "name": None})
    yield service
    service.stop()


@pytest.fixture
def gateway(service_environment, internal, private_redis):
    def start(**overrides):
        settings = {
            "link_service_url": internal.url, "user_service_url": internal.url,
            "social_graph_service_url": internal.url, "news_grpc_address": "127.0.0.1:1",
            "caller_token": "gateway-caller-token", "session_secret": "s" * 32,
            "oauth_client_id": "client", "oauth_client_secret": "secret", "redis_url": private_redis.url,
            "rate_limit_per_user": "1000/minute", "rate_limit_per_address": "1000/minute",
            "token_cache_seconds": 60, **overrides,
        }
        return service_environment.running(DEFINITION, **settings)
    return start


class CommandsSeen:
    """The commands clients send to Redis (not those its scripts run), from MONITOR, until `stop`."""

    def __init__(self, url: str) -> None:
        self._monitoring = redis.Redis.from_url(url, decode_responses=True)
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._client.ping()  # connected before monitoring: only its ECHO at the end is seen
        self._monitor = self._monitoring.monitor()
        self._monitor.__enter__()
        self.commands: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            seen = self._monitor.next_command()
            if seen["client_type"] == "lua":
                continue
            if seen["command"] == f"ECHO {END_OF_TEST}":
                return
            self.commands.append(seen["command"])

    def stop(self) -> list[str]:
        self._client.echo(END_OF_TEST)
        self._thread.join(10)
        self._monitor.__exit__()
        self._monitoring.close()
        self._client.close()
        return self.commands


def test_each_request_costs_one_redis_round_trip(gateway, private_redis):
    signed_in = {"Authorization": f"Bearer {TOKEN}"}
    with gateway() as (_, app):
        client = app.test_client()
        assert client.get("/v1/me", headers=signed_in).status_code == 200  # connects, loads the script
        seen = CommandsSeen(private_redis.url)
        statuses = [client.get("/v1/me", headers=signed_in).status_code for _ in range(5)]
        statuses += [client.get("/v1/me").status_code for _ in range(3)]
        statuses += [client.get("/login").status_code]
        commands = seen.stop()
    assert statuses == [200] * 5 + [401] * 3 + [302]
    assert len(commands) == len(statuses), "\n".join(commands)  # one each: address and user limits together
    assert all(command.startswith("EVALSHA") for command in commands)


def test_the_limits_hold_across_requests_that_cost_one_round_trip(gateway):
    signed_in = {"Authorization": f"Bearer {TOKEN}"}
    with gateway(rate_limit_per_user="3/minute") as (_, app):
        client = app.test_client()
        statuses = [client.get("/v1/me", headers=signed_in, environ_base={"REMOTE_ADDR": address}).status_code
                    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")]
        assert statuses == [200, 200, 200, 429]  # one user's limit, whichever address they come from
        assert client.get("/v1/me", environ_base={"REMOTE_ADDR": "10.0.0.4"}).status_code == 401


def test_the_limiter_connects_with_redis_password(gateway, private_redis):
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_set("requirepass", "limiter-secret")
    admin.close()
    with gateway(rate_limit_per_address="2/minute", redis_password="limiter-secret") as (_, app):
        client = app.test_client()
        codes = [client.get("/v1/me", environ_base={"REMOTE_ADDR": "10.9.8.7"}).status_code for _ in range(3)]
    assert codes == [401, 401, 429]  # enforced: without the password the limits would not be


def test_the_gateway_serves_unlimited_while_redis_is_down(gateway, private_redis):
    signed_in = {"Authorization": f"Bearer {TOKEN}"}
    with gateway(rate_limit_per_address="1/minute", rate_limit_per_user="1/minute") as (_, app):
        private_redis.stop()
        client = app.test_client()
        assert [client.get("/v1/me", headers=signed_in).status_code for _ in range(3)] == [200, 200, 200]
        assert [client.get("/v1/me").status_code for _ in range(2)] == [401, 401]
        response = client.get("/healthz/readiness")
    checks = {check["name"]: check for check in response.get_json()["checks"]}
    assert response.status_code == 200 and checks["redis"]["ok"] is False  # degraded, still serving


def test_retry_after_is_the_limiters_own(gateway):
    with gateway(rate_limit_per_address="2/hour") as (_, app):
        client = app.test_client()
        for _ in range(2):
            client.get("/v1/me", environ_base={"REMOTE_ADDR": "10.1.1.1"})
        response = client.get("/v1/me", environ_base={"REMOTE_ADDR": "10.1.1.1"})
    body = assert_error(response, 429, "rate_limited")
    assert "2 per 1 hour" in body["message"]
    assert 3500 < int(response.headers["Retry-After"]) <= 3600  # the window's length, not a fixed guess
