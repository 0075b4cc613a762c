"""The gateway as deployed: `delinkcious serve api-gateway` under gunicorn with two workers. It is built once in
the gunicorn master, before the fork (kit/serving/gunicorn.py), so this checks that what the workers inherit
works in each of them: the Redis client, the pools of the internal calls, the gRPC channel (opened in the
worker that calls), the login (authlib imported by the first one), and a SIGTERM that exits 0."""
from __future__ import annotations

import time

from delinkcious.local.servers import free_port

from tests.support.process import ServedService
from tests.support.services import unique_username


def test_built_before_the_fork_and_served_by_every_worker(service_environment, internal, tmp_path):
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
        "WEB_WORKERS": "2", "LOG_FORMAT": "json",
    }, tmp_path / "api-gateway.log")
    user = unique_username()
    internal.answer("POST", "/v1/tokens/verify", 200, {"user": {"username": user}, "token": {}})
    internal.answer("POST", f"/v1/users/{user}/links", 201, {"url": "https://e.com", "title": "T"})
    headers = {"Authorization": "Bearer dlk_served"}
    try:
        served.wait_ready(ops_url=f"http://127.0.0.1:{admin_port}")
        # Enough requests, on fresh connections, for both workers to serve some.
        for index in range(12):
            response = served.request("POST", "/v1/links", json={"url": "https://e.com", "title": "T"},
                                      headers={**headers, "Connection": "close", "X-Request-Id": f"served-{index}"})
            assert response.status_code == 201, response.text
            assert response.json() == {"url": "https://e.com", "title": "T"}
        started = time.monotonic()
        news = served.request("GET", "/v1/news", headers=headers)
        assert news.status_code == 503 and time.monotonic() - started < 10
        login = served.request("GET", "/login", allow_redirects=False)
        assert login.status_code == 302 and login.headers["Location"].startswith("https://github.com/login/oauth/")
        assert served.terminate() == 0, served.logs()[-3000:]
    finally:
        served.kill()
    saved = internal.asked("POST", f"/v1/users/{user}/links")
    assert [request["headers"]["X-Request-Id"] for request in saved] == [f"served-{index}" for index in range(12)]
    assert {request["headers"]["Delinkcious-Caller-Token"] for request in saved} == {"served-gateway-token"}
