"""The public /v1/links routes end to end, without the rest of the system: the gateway (`delinkcious serve
api-gateway`) in front of the real link service (`delinkcious serve link`, on the suite's PostgreSQL and NATS),
with a stand-in for the user service that knows every access token `dlk_<username>` (so a test has as many users
as it likes). Import the `link_chain` fixture into a test module to use it."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from delinkcious.link.app import DEFINITION as LINK
from delinkcious.local.servers import free_port

from tests.support.process import ServedService
from tests.support.services import unique_username

TOKEN_PREFIX = "dlk_"


class TokenStandIn:
    """Answers the gateway's POST /v1/tokens/verify: `dlk_<username>` is that user's token, anything else is 401."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                token = str(body.get("token", ""))
                if self.path == "/v1/tokens/verify" and token.startswith(TOKEN_PREFIX):
                    status, answer = 200, {"user": {"username": token.removeprefix(TOKEN_PREFIX)}, "token": {}}
                else:
                    status, answer = 401, {"message": "token: unknown", "code": "invalid_token"}
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class LinkChain:
    gateway: ServedService
    link: ServedService

    def new_user(self, prefix: str = "u") -> dict[str, str]:
        """A fresh user's headers for the gateway."""
        return {"Authorization": f"Bearer {TOKEN_PREFIX}{unique_username(prefix)}"}

    def call(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> requests.Response:
        return self.gateway.request(method, path, headers=headers, **kwargs)


def link_environment(service_environment, **settings: str) -> dict[str, str]:
    access = service_environment.database(LINK)
    return {
        "DATABASE_URL": access.dsn, "DATABASE_PASSWORD_FILE": str(access.password_file),
        "NATS_URL": service_environment.nats_url,
        "TRUSTED_CALLERS_DIR": str(service_environment.callers_dir), "ALLOWED_CALLERS": "api-gateway",
        "WEB_WORKERS": "2", "WEB_THREADS": "8", "LOG_FORMAT": "json", **settings,
    }


@pytest.fixture(scope="module")
def link_chain(service_environment, tmp_path_factory) -> Iterator[LinkChain]:
    directory: Path = tmp_path_factory.mktemp("link-chain")
    users = TokenStandIn()
    secret_file = directory / "page-token-secret"
    secret_file.write_text("p" * 40)
    link = ServedService("link", link_environment(service_environment, PAGE_TOKEN_SECRET_FILE=str(secret_file)),
                         directory / "link.log")
    secret = directory / "session-secret"
    secret.write_text("s" * 32)
    admin_port = free_port()
    gateway = ServedService("api-gateway", {
        "ADMIN_PORT": str(admin_port),
        "REDIS_URL": service_environment.redis_url,
        "LINK_SERVICE_URL": link.base_url, "USER_SERVICE_URL": users.url, "SOCIAL_GRAPH_SERVICE_URL": users.url,
        "NEWS_GRPC_ADDRESS": "127.0.0.1:1",
        "CALLER_TOKEN_FILE": str(service_environment.callers_dir / "api-gateway"),
        "SESSION_SECRET_FILE": str(secret), "OAUTH_CLIENT_ID": "client", "OAUTH_CLIENT_SECRET": "secret",
        "RATE_LIMIT_PER_ADDRESS": "100000/minute", "RATE_LIMIT_PER_USER": "100000/minute",
        "WEB_WORKERS": "2", "LOG_FORMAT": "json",
    }, directory / "api-gateway.log")
    try:
        link.wait_ready()
        gateway.wait_ready(ops_url=f"http://127.0.0.1:{admin_port}")
        yield LinkChain(gateway=gateway, link=link)
    finally:
        gateway.kill()
        link.kill()
        users.stop()
