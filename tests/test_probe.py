"""`delinkcious probe`, the image's health check: it reads the service's settings as `serve` does and asks the
service's own /healthz/<check> on this machine; exit 0 for a 200, 1 otherwise, with one line saying why."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from delinkcious.cli import PROBE_TIMEOUT_SECONDS
from delinkcious.link.app import DEFINITION
from delinkcious.local.servers import free_port

from tests.support.process import ServedService

# Starting the interpreter and loading a service's settings, on a busy test machine.
PROBE_START_SECONDS = 5.0


def probe(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "delinkcious.cli", "probe", *arguments], env=environment,
                          capture_output=True, text=True, timeout=60)


def base_environment() -> dict[str, str]:
    """This process's environment, without what would change which service or which metrics are meant."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith("PROMETHEUS_") and key != "SERVICE_NAME"}


def assert_fails_with_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def link_settings(service_environment, callers_dir) -> dict[str, str]:
    access = service_environment.database(DEFINITION)
    return {
        "DATABASE_URL": access.dsn,
        "DATABASE_PASSWORD_FILE": str(access.password_file),
        "NATS_URL": service_environment.nats_url,
        "TRUSTED_CALLERS_DIR": str(callers_dir),
        "ALLOWED_CALLERS": "api-gateway",
        "WEB_WORKERS": "1",
        "WEB_THREADS": "4",
        "PAGE_TOKEN_SECRET": service_environment.page_token_secret("link"),
    }


@contextmanager
def served_link(service_environment, log_path) -> Iterator[tuple[ServedService, dict[str, str]]]:
    """The real link service, and the environment it runs with (which the probe is given too)."""
    settings = link_settings(service_environment, service_environment.callers_dir)
    service = ServedService("link", settings, log_path)
    try:
        service.wait_ready()
        yield service, {**base_environment(), **settings, "HOST": "127.0.0.1", "PORT": str(service.port)}
    finally:
        service.kill()


@pytest.fixture(scope="module")
def running_link(service_environment, tmp_path_factory):
    with served_link(service_environment, tmp_path_factory.mktemp("probe") / "link.log") as (service, environment):
        yield service, environment


@pytest.mark.parametrize("check", [None, "liveness", "readiness", "ping"])
def test_a_running_service_passes(running_link, check):
    _service, environment = running_link
    result = probe(environment, "link", *(["--check", check] if check else []))
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""


def test_the_service_comes_from_service_name_when_not_given(running_link):
    _service, environment = running_link
    result = probe({**environment, "SERVICE_NAME": "link"}, "--check", "readiness")
    assert result.returncode == 0, result.stderr
    # Proof that SERVICE_NAME chose the service: link-checker's settings need a Redis that link's do not.
    assert_fails_with_one_line(probe({**environment, "SERVICE_NAME": "link-checker"}), "link-checker", "REDIS_URL")


def test_the_probe_asks_the_admin_port_when_there_is_one(running_link):
    service, environment = running_link
    assert probe({**environment, "PORT": str(free_port()), "ADMIN_PORT": str(service.port)}, "link").returncode == 0
    result = probe({**environment, "ADMIN_PORT": str(free_port())}, "link")
    assert result.returncode == 1


@pytest.mark.parametrize(("name", "value"), [
    ("NATS_URL", "http://127.0.0.1:4222"),
    ("PORT", "not-a-port"),
    ("DATABASE_PASSWORD_FILE", "/nonexistent/link-db-password"),  # secrets are read from files as serve reads them
])
def test_a_broken_setting_fails_and_is_named(running_link, name, value):
    _service, environment = running_link
    assert_fails_with_one_line(probe({**environment, name: value}, "link"), "link: configuration error", name)


def test_a_stopped_service_fails_within_seconds(service_environment, tmp_path):
    with served_link(service_environment, tmp_path / "link.log") as (service, environment):
        assert probe(environment, "link").returncode == 0
        assert service.terminate() == 0
    started = time.monotonic()
    result = probe(environment, "link")
    assert time.monotonic() - started < PROBE_START_SECONDS
    assert result.returncode == 1
    assert_fails_with_one_line(result, "link: liveness probe", f"127.0.0.1:{service.port}/healthz/liveness")


# Stand-ins for a service, for answers the real one does not give on demand. Link's settings are valid
# without its servers when nothing connects to them.
def standin_environment(host: str, port: int) -> dict[str, str]:
    return {**base_environment(), "CALLER_AUTH": "disabled", "HOST": host, "PORT": str(port),
            "DATABASE_URL": "postgresql://link@127.0.0.1:1/link", "NATS_URL": "nats://127.0.0.1:1",
            "PAGE_TOKEN_SECRET": "probe-page-token-secret-" + "x" * 16}


@contextmanager
def standin_ops_server(address: str, statuses: dict[str, int]) -> Iterator[int]:
    """An HTTP server on `address` answering /healthz/<check> with statuses[check]."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = statuses.get(self.path.removeprefix("/healthz/"), 404)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in address else socket.AF_INET

    try:
        server = Server((address, 0), Handler)
    except OSError as exc:
        pytest.skip(f"cannot listen on {address}: {exc}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_an_unhealthy_answer_fails_and_is_shown():
    with standin_ops_server("127.0.0.1", {"liveness": 200, "readiness": 503}) as port:
        environment = standin_environment("0.0.0.0", port)
        assert probe(environment, "link").returncode == 0
        result = probe(environment, "link", "--check", "readiness")
    assert result.returncode == 1
    assert_fails_with_one_line(result, "readiness", "answered 503")


def test_an_ipv6_service_is_probed_on_the_ipv6_loopback():
    with standin_ops_server("::1", {"liveness": 200}) as port:
        assert probe(standin_environment("::", port), "link").returncode == 0
        result = probe(standin_environment("0.0.0.0", port), "link")  # nothing on 127.0.0.1 at that port
    assert result.returncode == 1


def test_a_service_that_does_not_answer_fails_after_the_probe_timeout():
    with socket.socket() as silent:  # accepts connections (the backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        result = probe(standin_environment("127.0.0.1", silent.getsockname()[1]), "link")
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert_fails_with_one_line(result, "did not answer", "timed out")
    assert PROBE_TIMEOUT_SECONDS <= elapsed < PROBE_TIMEOUT_SECONDS + PROBE_START_SECONDS


def test_serve_takes_the_service_from_service_name_too():
    """The image's entry point is `delinkcious serve` with no argument."""
    environment = {**standin_environment("127.0.0.1", free_port()), "NATS_URL": "http://127.0.0.1:4222"}
    served = subprocess.run([sys.executable, "-m", "delinkcious.cli", "serve"],
                            env={**environment, "SERVICE_NAME": "link"}, capture_output=True, text=True, timeout=60)
    assert served.returncode == 2 and served.stderr.strip().startswith("link: configuration error: NATS_URL"), served
    unnamed = probe(environment)
    assert unnamed.returncode == 2 and "SERVICE_NAME" in unnamed.stderr
