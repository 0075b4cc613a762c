"""`GET /internal/v1/follows`: the whole graph, for the services that keep a projection of it (news), wired
as in production (real PostgreSQL, NATS JetStream, outbox relay) and driven through Flask's test client."""
from __future__ import annotations

import pytest
from delinkcious.kit.core.pages import encode_page_token
from delinkcious.social_graph.app import DEFINITION

from tests.support.assertions import assert_error
from tests.support.services import unique_username

PATH = "/internal/v1/follows"


@pytest.fixture(scope="module")
def graph(service_environment, user_service):
    with service_environment.running(DEFINITION, user_service_url=user_service.url, caller_token="sg-token",
                                     allowed_callers="api-gateway,news") as (runtime, app):
        yield runtime, app.test_client()


def user(user_service) -> str:
    username = unique_username()
    user_service.users.add(username)
    return username


def walk(client, headers, limit) -> list[dict]:
    edges, token = [], None
    while True:
        response = client.get(PATH, query_string={"limit": limit, **({"start_token": token} if token else {})},
                              headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert set(body) == {"follows", "next_token"} and len(body["follows"]) <= limit
        edges += body["follows"]
        token = body["next_token"]
        if token is None:
            return edges


def stored_edges(runtime) -> list[tuple[str, str]]:
    with runtime.db.transaction() as cursor:
        cursor.execute("SELECT follower, followed FROM follows ORDER BY id")
        return [(row["follower"], row["followed"]) for row in cursor.fetchall()]


def test_walking_every_page_returns_every_edge_once_oldest_first(graph, user_service, service_environment):
    runtime, client = graph
    # The gateway makes the edges (on their users' behalf); news reads them.
    gateway, news = service_environment.caller_headers("api-gateway"), service_environment.caller_headers("news")
    users = [user(user_service) for _ in range(6)]
    for follower in users:
        for followed in users:
            if follower != followed:
                response = client.post(f"/v1/users/{follower}/following", json={"followed": followed},
                                       headers=gateway)
                assert response.status_code == 201
    client.delete(f"/v1/users/{users[0]}/following/{users[1]}", headers=gateway)
    expected = stored_edges(runtime)  # every edge of the database, ours among them
    assert len([edge for edge in expected if edge[0] in users]) == 29
    for limit in (1, 7, 100, 1000):
        edges = walk(client, news, limit)
        assert [(edge["follower"], edge["followed"]) for edge in edges] == expected, limit
        assert all(set(edge) == {"follower", "followed", "created_at"} and edge["created_at"].endswith("Z")
                   for edge in edges)


def test_only_news_may_read_the_whole_graph(graph, service_environment):
    _, client = graph
    assert_error(client.get(PATH), 401, "unauthenticated")
    assert_error(client.get(PATH, headers={"Delinkcious-Caller-Token": "forged"}), 401, "unauthenticated")
    assert_error(client.get(PATH, headers=service_environment.caller_headers("test-outsider")), 403, "forbidden")
    # The gateway may call social-graph, on a user's behalf; it may not read everyone's edges.
    refused = assert_error(client.get(PATH, headers=service_environment.caller_headers("api-gateway")), 403,
                           "forbidden")
    assert "api-gateway" in refused["message"]
    assert client.get(PATH, headers=service_environment.caller_headers("news")).status_code == 200
    # A refused caller learns nothing about the parameters either: the caller is checked first.
    assert_error(client.get(PATH, query_string={"start_token": "garbage", "limit": "\0"},
                            headers=service_environment.caller_headers("api-gateway")), 403, "forbidden")
    # And news may read the whole graph, not a user's edges on their behalf (the gateway's routes).
    refused = assert_error(client.get(f"/v1/users/{unique_username()}/followers",
                                      headers=service_environment.caller_headers("news")), 403, "forbidden")
    assert refused["message"] == "caller 'news' may not call GET /v1/users/<username>/followers"


def test_bad_tokens_and_limits_are_400_naming_the_parameter(graph, user_service, service_environment):
    _, client = graph
    gateway, news = service_environment.caller_headers("api-gateway"), service_environment.caller_headers("news")
    ann = user(user_service)
    for _ in range(2):
        client.post(f"/v1/users/{ann}/following", json={"followed": user(user_service)}, headers=gateway)
    listing_token = client.get(f"/v1/users/{ann}/following", query_string={"limit": 1},
                               headers=gateway).get_json()["next_token"]
    for token in ("garbage", listing_token, encode_page_token(5, ["following", ann]), "eyJhIjotMSwiZiI6IiJ9"):
        assert_error(client.get(PATH, query_string={"start_token": token}, headers=news), 400, "invalid_input",
                     field="start_token")
    for limit in ("0", "1001", "ten", "-1"):
        assert_error(client.get(PATH, query_string={"limit": limit}, headers=news), 400, "invalid_input",
                     field="limit")
    # A walk's own token does not continue a user's list either.
    walk_token = client.get(PATH, query_string={"limit": 1}, headers=news).get_json()["next_token"]
    assert_error(client.get(f"/v1/users/{ann}/following", query_string={"start_token": walk_token},
                            headers=gateway), 400, "invalid_input", field="start_token")
