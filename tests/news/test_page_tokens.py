"""News page tokens: bound to their user, refused when changed, and a position no feed could have written (an
integer beyond 64 bits, which Redis refuses) is the client's 400 — against both feed stores, and end to end through
the gateway in front of the served news service, which signs its tokens with its PAGE_TOKEN_SECRET and refuses one
made under another secret."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
import redis
from delinkcious.contracts.events import FOLLOWED, LINK_ADDED, Event
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.kit.core.pages import PageTokens, encode_cursor
from delinkcious.local.servers import free_port
from delinkcious.news.events import on_follow, on_link_event
from delinkcious.news.service import NewsService
from delinkcious.news.store import InMemoryFeedStore, RedisFeedStore

from tests.api_gateway.link_chain import TokenStandIn
from tests.news.owners import news_environment
from tests.support.process import ServedService
from tests.support.services import unique_username

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
NEWS_SECRET = "news-page-token-secret-" + "v" * 16
OUT_OF_RANGE = [[0, 2**63], [2**63, 0], [-(2**63) - 1, 0], [0, 10**30]]


@pytest.fixture(params=["memory", "redis"])
def service(request) -> NewsService:
    if request.param == "memory":
        store = InMemoryFeedStore()
    else:
        store = RedisFeedStore(redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True))
    return NewsService(store, feed_max_length=50, authored_history=50)


def fed_reader(service: NewsService, items: int = 3) -> str:
    author, reader = unique_username("author"), unique_username("reader")
    on_follow(service, Event(subject=FOLLOWED, event_type="followed", author=reader, occurred_at=T0,
                             data={"follower": reader, "followed": author}))
    for index in range(items):
        on_link_event(service, Event(subject=LINK_ADDED, event_type="link_added", author=author,
                                     occurred_at=T0 + timedelta(seconds=index + 1),
                                     data={"username": author, "url": f"https://n/{index}", "title": "t"}))
    return reader


def start_token_refused(service: NewsService, username: str, token: str) -> str:
    with pytest.raises(InvalidInput) as raised:
        service.get_news(username, token, 1)
    assert raised.value.field == "start_token"
    return raised.value.message


@pytest.mark.parametrize("position", OUT_OF_RANGE)
def test_a_position_out_of_range_is_the_clients_400(service, position):
    reader = fed_reader(service)
    start_token_refused(service, reader, encode_cursor(position, ["news", reader]))


def test_a_token_is_bound_to_its_reader_and_refused_when_changed(service):
    reader, other = fed_reader(service), fed_reader(service)
    _, token = service.get_news(reader, "", 1)
    assert [item.url for item in service.get_news(reader, token, 1)[0]] == ["https://n/1"]
    assert "another listing" in start_token_refused(service, other, token)
    body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    body["a"][1] += 1  # skip one more item than the page did
    changed = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    assert "changed" in start_token_refused(service, reader, changed)


def test_through_the_gateway_a_bad_news_token_is_a_400_and_never_a_503(service_environment, owners, redis_url,
                                                                          tmp_path):
    users = TokenStandIn()
    grpc_port, admin_port = free_port(), free_port()
    news = ServedService("news", {**news_environment(service_environment, owners, redis_url, grpc_port),
                                  "PAGE_TOKEN_SECRET": NEWS_SECRET}, tmp_path / "news.log")
    secret = tmp_path / "session-secret"
    secret.write_text("s" * 32)
    gateway = ServedService("api-gateway", {
        "ADMIN_PORT": str(admin_port), "REDIS_URL": redis_url,
        "LINK_SERVICE_URL": users.url, "USER_SERVICE_URL": users.url, "SOCIAL_GRAPH_SERVICE_URL": users.url,
        "NEWS_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}",
        "CALLER_TOKEN_FILE": str(service_environment.callers_dir / "api-gateway"),
        "SESSION_SECRET_FILE": str(secret), "OAUTH_CLIENT_ID": "client", "OAUTH_CLIENT_SECRET": "secret",
        "RATE_LIMIT_PER_ADDRESS": "100000/minute", "RATE_LIMIT_PER_USER": "100000/minute", "LOG_FORMAT": "json",
    }, tmp_path / "api-gateway.log")
    try:
        news.wait_ready()
        gateway.wait_ready(ops_url=f"http://127.0.0.1:{admin_port}")
        reader = unique_username("reader")
        headers = {"Authorization": f"Bearer dlk_{reader}"}
        assert gateway.request("GET", "/v1/news", headers=headers).status_code == 200
        for position in OUT_OF_RANGE * 3:  # again and again: never a breaker's 503 for anyone
            response = gateway.request("GET", "/v1/news", headers=headers,
                                       params={"start_token": encode_cursor(position, ["news", reader])})
            assert response.status_code == 400 and response.json()["field"] == "start_token", response.text
        assert gateway.request("GET", "/v1/news", headers=headers).status_code == 200
        # Signed with the secret the service was given: a token made under it is taken, one made under another
        # secret (or none) is the client's 400.
        position = [0, 0]
        taken = gateway.request("GET", "/v1/news", headers=headers, params={
            "start_token": PageTokens(NEWS_SECRET.encode()).encode(position, ["news", reader])})
        assert taken.status_code == 200, taken.text
        for other in (PageTokens(b"another-news-secret-" + b"w" * 12), PageTokens()):
            refused = gateway.request("GET", "/v1/news", headers=headers,
                                      params={"start_token": other.encode(position, ["news", reader])})
            assert refused.status_code == 400 and refused.json()["field"] == "start_token", refused.text
            assert "changed" in refused.json()["message"]
    finally:
        gateway.kill()
        news.kill()
        users.stop()


def test_with_a_secret_only_the_service_can_make_a_token():
    signed = NewsService(InMemoryFeedStore(), feed_max_length=50, page_tokens=PageTokens(b"n" * 32))
    reader = fed_reader(signed)
    _, token = signed.get_news(reader, "", 1)
    assert [item.url for item in signed.get_news(reader, token, 1)[0]] == ["https://n/1"]
    assert "changed" in start_token_refused(signed, reader, encode_cursor([0, 0], ["news", reader]))
