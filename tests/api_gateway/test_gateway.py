"""The gateway's own behaviour, with stand-ins for the internal services (the whole system is
exercised black-box by integration-test/, see tests/test_integration_suite.py)."""
from __future__ import annotations

import time

import pytest
from delinkcious.api_gateway.app import DEFINITION
from delinkcious.contracts.public_api import document

from tests.support.assertions import assert_error
from tests.support.services import unique_username
from tests.support.stand_in import StandInService

TOKEN = "dlk_test-token"


@pytest.fixture
def gateway(service_environment, internal):
    def start(**overrides):
        settings = {
            "link_service_url": internal.url, "user_service_url": internal.url,
            "social_graph_service_url": internal.url, "news_grpc_address": "127.0.0.1:1",
            "caller_token": "gateway-caller-token", "session_secret": "s" * 32,
            "oauth_client_id": "client", "oauth_client_secret": "secret",
            "rate_limit_per_user": "1000/minute", "rate_limit_per_address": "1000/minute",
            "breaker_failures": 3, "breaker_reset_seconds": 30, "breaker_max_reset_seconds": 30,
            "downstream_timeout": 1,
            **overrides,
        }
        return service_environment.running(DEFINITION, **settings)
    return start


def sign_in(internal: StandInService, username: str) -> dict[str, str]:
    internal.answer("POST", "/v1/tokens/verify", 200, {"user": {"username": username}, "token": {}})
    return {"Authorization": f"Bearer {TOKEN}"}


def test_both_token_headers_and_a_short_verification_cache(gateway, internal):
    user = unique_username()
    sign_in(internal, user)
    internal.answer("GET", f"/v1/users/{user}", 200, {"username": user, "email": None, "name": None})
    with gateway(token_cache_seconds=0.5) as (_, app):
        client = app.test_client()
        assert client.get("/v1/me", headers={"Authorization": f"Bearer {TOKEN}"}).get_json()["username"] == user
        assert client.get("/v1/me", headers={"Access-Token": TOKEN}).status_code == 200
        assert len(internal.asked("POST", "/v1/tokens/verify")) == 1  # the second came from the cache
        assert internal.asked("POST", "/v1/tokens/verify")[0]["headers"]["Delinkcious-Caller-Token"] == \
            "gateway-caller-token"
        internal.answer("POST", "/v1/tokens/verify", 401, {"message": "revoked", "code": "invalid_token"})
        time.sleep(0.6)  # a revoked token stops working once the cache entry expires
        assert_error(client.get("/v1/me", headers={"Access-Token": TOKEN}), 401, "unauthenticated")
        assert_error(client.get("/v1/me"), 401, "unauthenticated")
        assert_error(client.get("/v1/me", headers={"Authorization": "Basic abc"}), 401, "unauthenticated")


def test_post_links_accepts_json_form_and_query(gateway, internal):
    user = unique_username()
    headers = sign_in(internal, user)
    internal.answer("POST", f"/v1/users/{user}/links", 201, {"url": "https://e.com", "title": "T"})
    with gateway() as (_, app):
        client = app.test_client()
        assert client.post("/v1/links", json={"url": "https://e.com", "title": "T", "tags": ["a"]},
                           headers=headers).status_code == 201
        assert client.post("/v1/links?url=https://e.com&title=T&tags=a,b", headers=headers).status_code == 201
        assert client.post("/v1/links", data={"url": "https://e.com", "title": "T", "tags": "c"},
                           headers=headers).status_code == 201
    bodies = [request["body"] for request in internal.asked("POST", f"/v1/users/{user}/links")]
    assert bodies == [{"url": "https://e.com", "title": "T", "tags": ["a"]},
                      {"url": "https://e.com", "title": "T", "tags": ["a", "b"]},
                      {"url": "https://e.com", "title": "T", "tags": ["c"]}]


def test_downstream_answers_pass_through_and_failures_are_503(gateway, internal):
    user = unique_username()
    headers = sign_in(internal, user)
    existing = {"url": "https://e.com", "title": "old"}
    internal.answer("POST", f"/v1/users/{user}/links", 409,
                    {"message": "url: already saved", "code": "duplicate_link", "link": existing})
    internal.answer("GET", f"/v1/users/{user}/links", 503, {"message": "boom", "code": "unavailable"})
    with gateway() as (_, app):
        client = app.test_client()
        body = assert_error(client.post("/v1/links", json={"url": "https://e.com", "title": "T"}, headers=headers),
                            409, "duplicate_link")
        assert body["link"] == existing
        for _ in range(3):
            response = client.get("/v1/links", headers=headers)
            assert_error(response, 503, "unavailable")
            assert int(response.headers["Retry-After"]) > 0
        asked = len(internal.asked("GET", f"/v1/users/{user}/links"))
        assert asked == 6  # reads are retried (once) before they count as a failure
        # The breaker is open now: answered at once, without calling the failing service.
        response = client.get("/v1/links", headers=headers)
        assert_error(response, 503, "unavailable")
        assert response.headers["Retry-After"] == "30"
        assert len(internal.asked("GET", f"/v1/users/{user}/links")) == asked


def test_writes_are_never_retried(gateway, internal):
    user = unique_username()
    headers = sign_in(internal, user)
    internal.answer("PUT", f"/v1/users/{user}/links", 503, {"message": "busy", "code": "unavailable"})
    with gateway() as (_, app):
        response = app.test_client().put("/v1/links", json={"url": "https://e.com"}, headers=headers)
    assert_error(response, 503, "unavailable")
    assert len(internal.asked("PUT", f"/v1/users/{user}/links")) == 1


def test_news_down_is_503_not_a_hang(gateway, internal):
    headers = sign_in(internal, unique_username())
    with gateway() as (_, app):
        started = time.monotonic()
        response = app.test_client().get("/v1/news", headers=headers)
        assert_error(response, 503, "unavailable")
        assert response.headers["Retry-After"] and time.monotonic() - started < 5


def test_rate_limit_per_user_is_429_with_retry_after(gateway, internal):
    user = unique_username()
    headers = sign_in(internal, user)
    internal.answer("GET", f"/v1/users/{user}", 200, {"username": user})
    with gateway(rate_limit_per_user="3/minute") as (_, app):
        client = app.test_client()
        assert [client.get("/v1/me", headers=headers).status_code for _ in range(3)] == [200, 200, 200]
        response = client.get("/v1/me", headers=headers)
        assert_error(response, 429, "rate_limited")
        assert 0 < int(response.headers["Retry-After"]) <= 61


def test_rate_limit_per_address_covers_unauthenticated_requests(gateway, internal):
    with gateway(rate_limit_per_address="2/minute") as (_, app):
        client = app.test_client()
        codes = [client.get("/v1/me", environ_base={"REMOTE_ADDR": "10.9.8.7"}).status_code for _ in range(3)]
        assert codes == [401, 401, 429]


def test_bad_input_never_reaches_the_services(gateway, internal):
    user = unique_username()
    headers = sign_in(internal, user)
    with gateway() as (_, app):
        client = app.test_client()
        assert_error(client.post("/v1/links", data="x" * 70_000, content_type="application/json", headers=headers),
                     413, "payload_too_large")
        assert_error(client.put("/v1/links", data="{broken", content_type="application/json", headers=headers),
                     400, "invalid_input", "body")
        assert_error(client.delete("/v1/links", headers=headers), 400, "invalid_input", "url")
        assert_error(client.get("/v1/news?limit=1000", headers=headers), 400, "invalid_input", "limit")
        assert_error(client.get("/nowhere", headers=headers), 404, "not_found")
    assert internal.asked("PUT", f"/v1/users/{user}/links") == []


def test_login_redirects_to_the_provider(gateway, internal):
    with gateway() as (_, app):
        response = app.test_client().get("/login")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("https://github.com/login/oauth/authorize?")
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Flogin%2Fauthorized" in response.headers["Location"]
    assert "HttpOnly" in response.headers["Set-Cookie"]


def test_every_public_route_is_in_the_openapi_document(gateway, internal):
    with gateway() as (_, app):
        served = {rule.rule for rule in app.url_map.iter_rules()
                  if not rule.rule.startswith(("/healthz", "/metrics", "/static"))}
        documented = set(document("http://x")["paths"])
        spec = app.test_client().get("/v1/openapi.json").get_json()
        docs = app.test_client().get("/docs")
    assert served - {"/v1/openapi.json", "/docs"} == documented
    assert spec["openapi"].startswith("3.") and docs.status_code == 200 and b"/v1/links" in docs.data
    import schemathesis

    schema = schemathesis.openapi.from_dict(spec)
    assert len(list(schema.get_all_operations())) == sum(len(ops) for ops in spec["paths"].values())


@pytest.mark.parametrize("query", ["", "?code=abc&state=forged", "?error=access_denied"])
def test_a_callback_that_is_not_ours_is_a_clean_401(gateway, internal, query):
    with gateway() as (_, app):
        response = app.test_client().get(f"/login/authorized{query}")
    assert_error(response, 401, "login_failed")
