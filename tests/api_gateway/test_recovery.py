"""The gateway in front of the real link service (served by gunicorn, real PostgreSQL and NATS): with its default
breaker settings it resumes traffic within about a second of the link service being ready again, and a client's bad
input (a NUL byte in a regex filter, a lone surrogate in a field) is that client's 400 and never opens the breaker
for everyone else."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from delinkcious.api_gateway.app import DEFINITION as GATEWAY
from delinkcious.link.app import DEFINITION as LINK
from delinkcious.local.servers import free_port

import tests.support.process as process
from tests.support.assertions import assert_error
from tests.support.process import ServedService
from tests.support.services import unique_username

RECOVERY_LIMIT_S = 2.5  # BREAKER_MAX_RESET_SECONDS (2 s) and one probe's round trip


class LinkService:
    """The link service served for real on a port of its own, which a restart keeps."""

    def __init__(self, service_environment: Any, log_dir: Any) -> None:
        access = service_environment.database(LINK)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._environment = {
            "DATABASE_URL": access.dsn, "DATABASE_PASSWORD_FILE": str(access.password_file),
            "NATS_URL": service_environment.nats_url, "TRUSTED_CALLERS_DIR": str(service_environment.callers_dir),
            "ALLOWED_CALLERS": "api-gateway", "WEB_WORKERS": "1", "LOG_FORMAT": "json",
        }
        self._log_dir = log_dir
        self.starts = 0
        self.served: ServedService | None = None

    def start(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.starts += 1
        with monkeypatch.context() as patch:
            patch.setattr(process, "free_port", lambda: self.port)
            self.served = ServedService("link", self._environment, self._log_dir / f"link-{self.starts}.log")
        self.served.wait_ready()

    def stop(self) -> None:
        assert self.served is not None
        assert self.served.terminate() == 0, self.served.logs()[-2000:]

    def kill(self) -> None:
        if self.served is not None:
            self.served.kill()


@pytest.fixture
def link_service(service_environment, tmp_path, monkeypatch) -> Iterator[LinkService]:
    service = LinkService(service_environment, tmp_path)
    service.start(monkeypatch)
    try:
        yield service
    finally:
        service.kill()


@pytest.fixture
def gateway(service_environment, internal, link_service):
    """The gateway with its default breaker settings, in front of the real link service; the stand-in plays the
    user service (token verification)."""
    settings = {"link_service_url": link_service.url, "user_service_url": internal.url,
                "social_graph_service_url": internal.url, "news_grpc_address": "127.0.0.1:1",
                "caller_token": (service_environment.callers_dir / "api-gateway").read_text().strip(),
                "session_secret": "s" * 32, "oauth_client_id": "client", "oauth_client_secret": "secret",
                "rate_limit_per_user": "100000/minute", "rate_limit_per_address": "100000/minute"}
    with service_environment.running(GATEWAY, **settings) as (_runtime, app):
        yield app.test_client()


def sign_in(internal: Any, username: str) -> dict[str, str]:
    token = f"dlk_{username}"
    internal.answer("POST", "/v1/tokens/verify", 200, {"user": {"username": username}, "token": {}})
    return {"Authorization": f"Bearer {token}"}


def test_traffic_resumes_within_about_a_second_of_the_link_service_being_ready_again(
        gateway, link_service, internal, monkeypatch):
    headers = sign_in(internal, unique_username())
    assert gateway.get("/v1/links", headers=headers).status_code == 200
    link_service.stop()
    # Down for a while under traffic: the breaker opens, and its probes keep failing (its open period grows).
    down_until = time.monotonic() + 5
    statuses = set()
    while time.monotonic() < down_until:
        response = gateway.get("/v1/links", headers=headers)
        statuses.add(response.status_code)
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
        time.sleep(0.05)
    checks = {check["name"]: check for check in gateway.get("/healthz/readiness").get_json()["checks"]}
    assert checks["dependencies"]["detail"]["link"] in ("open", "half-open")

    link_service.start(monkeypatch)  # returns once the link service answers its readiness with 200
    ready = time.monotonic()
    while (status := gateway.get("/v1/links", headers=headers).status_code) != 200:
        assert status == 503
        assert time.monotonic() - ready < 15, "the gateway never called the link service again"
        time.sleep(0.02)
    assert time.monotonic() - ready < RECOVERY_LIMIT_S


def test_one_users_bad_filters_never_open_the_breaker_for_another(gateway, link_service, internal):
    """User A sends a NUL byte in a regex filter ten times (the link service failed on it with a 500, which opened
    the gateway's breaker): A gets 400 each time, and B is served."""
    a, b = unique_username("a"), unique_username("b")
    for _ in range(10):
        sign_in(internal, a)
        assert_error(gateway.get("/v1/links?title_regex=ab%00c", headers={"Authorization": f"Bearer dlk_{a}"}),
                     400, "invalid_input", "title_regex")
    headers = sign_in(internal, b)
    assert gateway.get("/v1/links", headers=headers).status_code == 200


def test_a_lone_surrogate_in_a_field_is_the_clients_400_not_a_503(gateway, link_service, internal):
    headers = {**sign_in(internal, unique_username()), "Content-Type": "application/json"}
    for _ in range(6):  # more than BREAKER_FAILURES
        response = gateway.post("/v1/links", headers=headers,
                                data=rb'{"url": "https://lone.example", "title": "x\ud800"}')
        assert_error(response, 400, "invalid_input", "title")
    response = gateway.post("/v1/links", headers=headers, data=b'{"url": "https://fine.example", "title": "ok"}')
    assert response.status_code == 201, response.get_data(as_text=True)


def test_the_link_service_itself_refuses_the_same_input_with_400(link_service, service_environment):
    """Behind the gateway, the link service applies the same kit rules: a caller that is not the gateway (or a
    gateway of another version) cannot make it fail either."""
    import requests

    headers = service_environment.caller_headers()
    user = unique_username()
    response = requests.get(f"{link_service.url}/v1/users/{user}/links?url_regex=%00", headers=headers, timeout=10)
    assert response.status_code == 400 and response.json()["field"] == "url_regex"
    response = requests.post(f"{link_service.url}/v1/users/{user}/links", timeout=10,
                             headers={**headers, "Content-Type": "application/json"},
                             data=rb'{"url": "https://lone.example", "title": "\udc00"}')
    assert response.status_code == 400 and response.json()["field"] == "title"
