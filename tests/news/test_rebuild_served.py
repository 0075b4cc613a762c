"""A news store that loses its data rebuilds itself from the owning services, end to end: `delinkcious serve
news` (gRPC + ops port) against a Redis of this module's own that the tests empty (FLUSHALL), the real link and
social-graph services over HTTP and NATS JetStream; and `delinkcious news rebuild` on demand."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import grpc
import pytest
import redis
from delinkcious.contracts.news.v1 import news_pb2, news_pb2_grpc
from delinkcious.local.servers import RedisServer, free_port
from delinkcious.news.store import GENERATION_KEY, REBUILD_LOCK_KEY, RedisFeedStore

from tests.news.owners import news_environment
from tests.support.jetstream import wait_until
from tests.support.process import ServedService
from tests.support.servers import serving
from tests.support.services import unique_username


@pytest.fixture(scope="module")
def store_server(tmp_path_factory):
    with serving(RedisServer(tmp_path_factory.mktemp("news-redis"))) as server:
        yield server


@pytest.fixture(scope="module")
def store(store_server):
    client = redis.Redis.from_url(store_server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def news(service_environment, owners, store_server, tmp_path_factory):
    grpc_port = free_port()
    environment = news_environment(service_environment, owners, store_server.url, grpc_port)
    served = ServedService("news", {**environment, "STORE_CHECK_INTERVAL": "1"},
                           tmp_path_factory.mktemp("news-rebuild") / "news.log")
    try:
        served.wait_ready()
        served.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        yield served
        served.channel.close()
    finally:
        served.kill()


def feed(news, service_environment, username: str) -> list[tuple[str, str, str]]:
    stub = news_pb2_grpc.NewsServiceStub(news.channel)
    token = (service_environment.callers_dir / "api-gateway").read_text()
    response = stub.GetNews(news_pb2.GetNewsRequest(username=username, limit=100),
                            metadata=[("delinkcious-caller-token", token)], timeout=5)
    return [(news_pb2.EventType.Name(event.event_type), event.url, event.title) for event in response.events]


def log_events(news, name: str) -> list[dict]:
    return [record for line in news.logs().splitlines() if line.startswith("{")
            and (record := json.loads(line))["event"] == name]


def test_a_flushed_store_is_rebuilt_and_followers_get_new_links_again(news, owners, store, service_environment):
    gateway = service_environment.caller_headers()
    author, reader, other = unique_username("author"), unique_username("reader"), unique_username("other")
    owners.users.users.update({author, other})
    for followed in (author, other):
        assert owners.graph.post(f"/v1/users/{reader}/following", json={"followed": followed},
                                 headers=gateway).status_code == 201
    time.sleep(0.3)  # the links come after the follows
    for index, title in enumerate(("one", "two")):
        assert owners.link.post(f"/v1/users/{author}/links", json={"url": f"https://rebuilt.example/{index}",
                                                                   "title": title}, headers=gateway).status_code == 201
    owners.link.put(f"/v1/users/{author}/links", json={"url": "https://rebuilt.example/0", "title": "one, edited"},
                    headers=gateway)
    owners.link.post(f"/v1/users/{other}/links", json={"url": "https://other.example/", "title": "other"},
                     headers=gateway)
    before = [("LINK_ADDED", "https://other.example/", "other"),
              ("LINK_UPDATED", "https://rebuilt.example/0", "one, edited"),
              ("LINK_ADDED", "https://rebuilt.example/1", "two"), ("LINK_ADDED", "https://rebuilt.example/0", "one")]
    assert wait_until(lambda: feed(news, service_environment, reader) == before, timeout=10), \
        feed(news, service_environment, reader)
    assert wait_until(lambda: store.get(GENERATION_KEY), timeout=10)  # the start-up check made it complete

    # Redis loses its data, and another replica starts rebuilding it at once: it holds the lock until it lets go.
    with store.pipeline(transaction=True) as emptied:
        emptied.flushall().set(REBUILD_LOCK_KEY, "another-replica", px=60_000).execute()
    assert feed(news, service_environment, reader) == []  # served from what is there, no error
    readiness = wait_until(lambda: (body := news.request("GET", "/healthz/readiness").json())["status"] == "degraded"
                           and body, timeout=5)
    assert readiness, "the missing marker is reported"
    assert news.request("GET", "/healthz/readiness").status_code == 200  # and the service stays ready
    [store_check] = [check for check in readiness["checks"] if check["name"] == "feed_store"]
    assert not store_check["ok"] and not store_check["critical"] and "generation marker" in store_check["error"]
    time.sleep(1.5)  # a periodic check or two
    assert store.get(GENERATION_KEY) is None  # nobody rebuilt while the other replica held the lock

    # The other replica goes away without finishing. Once the lock is free, news rebuilds: one item per link, its
    # last change, in fan-out's order.
    store.delete(REBUILD_LOCK_KEY)
    assert wait_until(lambda: feed(news, service_environment, reader), timeout=15)
    assert feed(news, service_environment, reader) == [
        ("LINK_ADDED", "https://other.example/", "other"), ("LINK_UPDATED", "https://rebuilt.example/0", "one, edited"),
        ("LINK_ADDED", "https://rebuilt.example/1", "two")]
    assert wait_until(lambda: news.request("GET", "/healthz/readiness").json()["status"] == "ready", timeout=5)

    # The bug of the issue: after the loss, followers stopped getting new links. Not any more.
    assert owners.link.post(f"/v1/users/{author}/links", json={"url": "https://rebuilt.example/2", "title": "new"},
                            headers=gateway).status_code == 201
    assert wait_until(lambda: feed(news, service_environment, reader)[:1] ==
                      [("LINK_ADDED", "https://rebuilt.example/2", "new")], timeout=10)
    assert len(feed(news, service_environment, reader)) == 4

    assert log_events(news, "projection_marker_missing") and log_events(news, "projection_rebuild_elsewhere")
    rebuilt = [record for record in log_events(news, "projection_rebuild_completed") if record["trigger"] != "startup"]
    assert rebuilt and rebuilt[-1]["follows"] >= 2 and rebuilt[-1]["items"] >= 3
    metrics = news.request("GET", "/metrics").text
    assert any(line.startswith("delinkcious_projection_rebuilds_total{") and 'outcome="completed"' in line
               and 'service="news"' in line and not line.endswith(" 0.0") for line in metrics.splitlines())
    assert 'delinkcious_projection_complete{service="news"} 1.0' in metrics


def test_events_consumed_while_the_store_is_rebuilt_appear_once(news, owners, store, service_environment):
    gateway = service_environment.caller_headers()
    author, reader = unique_username("author"), unique_username("reader")
    owners.users.users.add(author)
    assert owners.graph.post(f"/v1/users/{reader}/following", json={"followed": author},
                             headers=gateway).status_code == 201
    time.sleep(0.3)
    urls = [f"https://busy.example/{index}" for index in range(30)]
    for url in urls[:15]:
        owners.link.post(f"/v1/users/{author}/links", json={"url": url, "title": "t"}, headers=gateway)
    assert wait_until(lambda: len(feed(news, service_environment, reader)) == 15, timeout=10)
    store.flushall()
    for url in urls[15:]:  # written while news notices the loss and rebuilds
        owners.link.post(f"/v1/users/{author}/links", json={"url": url, "title": "t"}, headers=gateway)
    assert wait_until(lambda: len(feed(news, service_environment, reader)) == 30 and store.get(GENERATION_KEY),
                      timeout=15)
    time.sleep(1.5)  # any straggler (a redelivery, a second look at the marker) would show now
    items = feed(news, service_environment, reader)
    assert sorted(url for _, url, _ in items) == sorted(urls) and {kind for kind, _, _ in items} == {"LINK_ADDED"}


# --- `delinkcious news rebuild` ---------------------------------------------------------------------------------
def rebuild_command(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROMETHEUS_")} | environment
    return subprocess.run([sys.executable, "-m", "delinkcious.cli", "news", "rebuild", *arguments], env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_rebuild_command_rebuilds_a_store_on_demand(owners, store_server, service_environment):
    gateway = service_environment.caller_headers()
    author, reader = unique_username("author"), unique_username("reader")
    owners.users.users.add(author)
    assert owners.graph.post(f"/v1/users/{reader}/following", json={"followed": author},
                             headers=gateway).status_code == 201
    time.sleep(0.01)
    owners.link.post(f"/v1/users/{author}/links", json={"url": "https://cli.example/a", "title": "A"}, headers=gateway)
    # A store of its own (database 1 of the module's Redis): the command needs no news process.
    url = store_server.url.removesuffix("/0") + "/1"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    environment = news_environment(service_environment, owners, url, free_port())
    try:
        for _ in range(2):  # and again: the same store
            done = rebuild_command(environment)
            assert done.returncode == 0, done.stdout + done.stderr
            records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
            [completed] = [record for record in records if record["event"] == "projection_rebuild_completed"]
            assert completed["trigger"] == "command" and completed["service"] == "news"
            assert client.get(GENERATION_KEY) == completed["generation"] and client.get(REBUILD_LOCK_KEY) is None
            items = RedisFeedStore(client).read_feed(reader, None, 10)
            assert [(item.event_type, item.url, item.title, item.author) for item in items] == \
                [("link_added", "https://cli.example/a", "A", author)]
            assert [window.follower for window in RedisFeedStore(client).follow_windows(author)] == [reader]

        refused = rebuild_command({**environment, "CALLER_TOKEN_FILE": "",
                                   "CALLER_TOKEN": "a token nobody trusts"})
        assert refused.returncode == 1 and "social-graph answered 401" in refused.stdout
        missing = rebuild_command({**environment, "LINK_SERVICE_URL": ""})
        assert missing.returncode == 2 and "LINK_SERVICE_URL" in missing.stdout
        client.set(REBUILD_LOCK_KEY, "a-replica", px=60_000)
        waited = rebuild_command(environment, "--lock-wait", "1")
        assert waited.returncode == 1 and "held the lock" in waited.stdout
    finally:
        client.flushdb()
        client.close()
