"""What the gateway's tests share: stand-in internal services, a clock the test moves by hand, and the gateway
served for real (gunicorn, two workers) in front of the stand-ins."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from delinkcious.local.servers import free_port

from tests.support.process import ServedService
from tests.support.stand_in import StandInService


class Clock:
    """Monotonic time that passes only when a test sets `now`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def internal() -> Iterator[StandInService]:
    """One stand-in for the internal services the gateway calls."""
    service = StandInService()
    yield service
    service.stop()


@pytest.fixture
def served_gateway(service_environment, internal, tmp_path) -> Iterator[Callable[..., ServedService]]:
    """Starts `delinkcious serve api-gateway` (two workers) with the given extra settings, in front of the
    stand-in; returns it once ready (its operator endpoints are on `served.admin_url`). Killed at the end."""
    started: list[ServedService] = []

    def start(**settings: str) -> ServedService:
        token_file = tmp_path / "caller-token"
        token_file.write_text("served-gateway-token\n")
        secret_file = tmp_path / "session-secret"
        secret_file.write_text("s" * 32)
        admin_port = free_port()
        served = ServedService("api-gateway", {
            "ADMIN_PORT": str(admin_port),
            "REDIS_URL": service_environment.redis_url,
            "LINK_SERVICE_URL": internal.url, "USER_SERVICE_URL": internal.url,
            "SOCIAL_GRAPH_SERVICE_URL": internal.url, "NEWS_GRPC_ADDRESS": "127.0.0.1:1",
            "CALLER_TOKEN_FILE": str(token_file), "SESSION_SECRET_FILE": str(secret_file),
            "OAUTH_CLIENT_ID": "client", "OAUTH_CLIENT_SECRET": "secret",
            "WEB_WORKERS": "2", "LOG_FORMAT": "json", **settings,
        }, tmp_path / f"api-gateway-{len(started)}.log")
        started.append(served)
        served.admin_url = f"http://127.0.0.1:{admin_port}"  # type: ignore[attr-defined]
        served.wait_ready(ops_url=served.admin_url)  # type: ignore[attr-defined]
        return served

    yield start
    for served in started:
        served.kill()
