"""The news service as deployed (`delinkcious serve news`: gRPC + ops side port), fed by the real
link and social-graph services through NATS JetStream (and able to rebuild from them over HTTP), with feeds
in a real Redis."""
from __future__ import annotations

import signal
import time
import uuid

import grpc
import pytest
from delinkcious.contracts.news.v1 import news_pb2, news_pb2_grpc
from delinkcious.kit.core.clock import format_timestamp, utc_now
from delinkcious.local.servers import free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.news.owners import news_environment
from tests.support.jetstream import publish_event, wait_until
from tests.support.process import ServedService
from tests.support.services import unique_username


@pytest.fixture(scope="module")
def news(service_environment, redis_url, owners, tmp_path_factory):
    grpc_port = free_port()
    served = ServedService("news", news_environment(service_environment, owners, redis_url, grpc_port),
                           tmp_path_factory.mktemp("news") / "news.log")
    try:
        served.wait_ready()
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        served.channel = channel
        yield served
        channel.close()
    finally:
        served.kill()


@pytest.fixture(scope="module")
def services(owners):
    return owners.link, owners.graph, owners.users


def get_news(news, username: str, caller: str = "api-gateway", service_environment=None, **request):
    stub = news_pb2_grpc.NewsServiceStub(news.channel)
    metadata = [("x-request-id", "news-test")]
    if service_environment is not None:
        metadata.append(("delinkcious-caller-token", (service_environment.callers_dir / caller).read_text()))
    return stub.GetNews(news_pb2.GetNewsRequest(username=username, **request), metadata=metadata, timeout=5)


def feed_urls(news, username, service_environment) -> list[tuple[int, str]]:
    response = get_news(news, username, service_environment=service_environment, limit=100)
    return [(event.event_type, event.url) for event in response.events]


def test_links_reach_followers_feeds_within_a_second(news, services, service_environment):
    link, graph, stand_in = services
    headers = service_environment.caller_headers()
    author, reader, latecomer = unique_username("author"), unique_username("reader"), unique_username("late")
    stand_in.users.add(author)
    assert graph.post(f"/v1/users/{reader}/following", json={"followed": author}, headers=headers).status_code == 201
    time.sleep(0.3)  # the follow event's time is before the link's

    added_at = time.monotonic()
    assert link.post(f"/v1/users/{author}/links", json={"url": "https://news.example/a", "title": "A"},
                     headers=headers).status_code == 201
    assert wait_until(lambda: feed_urls(news, reader, service_environment), timeout=5)
    assert time.monotonic() - added_at < 1.5
    assert feed_urls(news, reader, service_environment) == [(news_pb2.LINK_ADDED, "https://news.example/a")]

    # A follow made now sees only what comes later.
    assert graph.post(f"/v1/users/{latecomer}/following", json={"followed": author},
                      headers=headers).status_code == 201
    time.sleep(0.3)
    link.put(f"/v1/users/{author}/links", json={"url": "https://news.example/a", "title": "A2"}, headers=headers)
    link.delete(f"/v1/users/{author}/links", query_string={"url": "https://news.example/a"}, headers=headers)
    expected = [(news_pb2.LINK_DELETED, "https://news.example/a"), (news_pb2.LINK_UPDATED, "https://news.example/a")]
    assert wait_until(lambda: feed_urls(news, reader, service_environment)[:2] == expected, timeout=5)
    assert wait_until(lambda: feed_urls(news, latecomer, service_environment) == expected, timeout=5)
    full = get_news(news, reader, service_environment=service_environment).events
    assert [event.title for event in full] == ["A2", "A2", "A"]
    assert all(event.username == author and event.timestamp.seconds > 0 for event in full)

    # Unfollowing stops new events.
    graph.delete(f"/v1/users/{reader}/following/{author}", headers=headers)
    time.sleep(0.3)
    link.post(f"/v1/users/{author}/links", json={"url": "https://news.example/b", "title": "B"}, headers=headers)
    assert wait_until(lambda: len(feed_urls(news, latecomer, service_environment)) == 3, timeout=5)
    assert len(feed_urls(news, reader, service_environment)) == 3


def test_replayed_events_do_not_duplicate(news, services, service_environment):
    author, reader = unique_username("author"), unique_username("reader")
    now = utc_now()
    follow = {"event_id": str(uuid.uuid4()), "event_type": "followed", "author": reader,
              "occurred_at": format_timestamp(now), "follower": reader, "followed": author}
    added = {"event_id": str(uuid.uuid4()), "event_type": "link_added", "author": author,
             "occurred_at": format_timestamp(utc_now()), "username": author, "url": "https://dup.example",
             "title": "Dup", "description": "", "tags": []}
    for _ in range(3):  # the same events published again (not deduplicated by JetStream: no msg id)
        publish_event(service_environment.nats_url, "delinkcious.social.v1.followed", follow)
        publish_event(service_environment.nats_url, "delinkcious.links.v1.added", added)
    assert wait_until(lambda: feed_urls(news, reader, service_environment), timeout=5)
    time.sleep(0.5)
    assert feed_urls(news, reader, service_environment) == [(news_pb2.LINK_ADDED, "https://dup.example")]


def test_errors_are_status_codes(news, service_environment):
    with pytest.raises(grpc.RpcError) as raised:
        get_news(news, "Not Valid", service_environment=service_environment)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "username" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        get_news(news, "ann", service_environment=service_environment, start_token="garbage")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as raised:
        get_news(news, "ann", service_environment=service_environment, limit=1000)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as raised:
        get_news(news, "ann")
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as raised:
        get_news(news, "ann", caller="test-outsider", service_environment=service_environment)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_health_reflection_ops_port_and_metrics(news, service_environment):
    health = health_pb2_grpc.HealthStub(news.channel)
    for name in ("", "delinkcious.news.v1.NewsService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    reflection = reflection_pb2_grpc.ServerReflectionStub(news.channel)
    answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {service.name for answer in answers for service in answer.list_services_response.service}
    assert "delinkcious.news.v1.NewsService" in names and "grpc.health.v1.Health" in names

    readiness = news.request("GET", "/healthz/readiness").json()
    assert {check["name"] for check in readiness["checks"]} >= {"redis", "nats"}
    get_news(news, "metrics-user", service_environment=service_environment)
    metrics = news.request("GET", "/metrics").text
    assert 'delinkcious_grpc_requests_total{code="OK",method="/delinkcious.news.v1.NewsService/GetNews"' in metrics
    assert "delinkcious_feed_fanout_followers_bucket" in metrics
    assert "delinkcious_events_consumed_total" in metrics


def test_sigterm_stops_cleanly(news):
    news.process.send_signal(signal.SIGTERM)
    assert news.process.wait(30) == 0
    assert '"event": "worker_stopping"' in news.logs() and '"event": "service_stopped"' in news.logs()
