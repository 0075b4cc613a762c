"""Social-graph page tokens: signed with the service's PAGE_TOKEN_SECRET (kit/serving/config.py's PageTokenSecret),
bound to their user and their listing (following, followers, the internal walk over every edge), and refused —
`400 invalid_input` naming `start_token` — when made under another secret, without one, for another user or for
another listing. Wired as in production (real PostgreSQL, NATS JetStream), driven through Flask's test client."""
from __future__ import annotations

import base64
import json

import pytest
from delinkcious.kit.core.pages import PageTokens
from delinkcious.social_graph.app import DEFINITION

from tests.support.assertions import assert_error
from tests.support.services import unique_username

SECRET = "social-graph-page-token-secret-" + "z" * 12
OTHER_SECRETS = [PageTokens(b"another-social-graph-secret-" + b"q" * 8), PageTokens()]
WALK = "/internal/v1/follows"


@pytest.fixture(scope="module")
def graph(service_environment, user_service):
    with service_environment.running(DEFINITION, user_service_url=user_service.url, caller_token="sg-token",
                                     allowed_callers="api-gateway,news", page_token_secret=SECRET) as (_, app):
        yield app.test_client()


@pytest.fixture
def gateway(service_environment) -> dict[str, str]:
    return service_environment.caller_headers("api-gateway")


def new_user(user_service) -> str:
    username = unique_username()
    user_service.users.add(username)
    return username


def position_of(token: str) -> int:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["a"]


def following_with_a_second_page(graph, gateway, user_service) -> tuple[str, str]:
    """A user who follows three others, and the token of the second page of whom they follow (one a page)."""
    ann = new_user(user_service)
    for _ in range(3):
        graph.post(f"/v1/users/{ann}/following", json={"followed": new_user(user_service)}, headers=gateway)
    token = graph.get(f"/v1/users/{ann}/following", query_string={"limit": 1}, headers=gateway).get_json()["next_token"]
    assert token
    return ann, token


def test_a_token_of_user_a_is_refused_for_user_b_and_for_another_listing(graph, gateway, user_service,
                                                                         service_environment):
    ann, token = following_with_a_second_page(graph, gateway, user_service)
    bob = new_user(user_service)
    graph.post(f"/v1/users/{bob}/following", json={"followed": ann}, headers=gateway)
    assert graph.get(f"/v1/users/{ann}/following", query_string={"limit": 1, "start_token": token},
                     headers=gateway).status_code == 200
    for refused in (
        graph.get(f"/v1/users/{bob}/following", query_string={"start_token": token}, headers=gateway),  # B's list
        graph.get(f"/v1/users/{ann}/followers", query_string={"start_token": token}, headers=gateway),  # A's other
        graph.get(WALK, query_string={"start_token": token}, headers=service_environment.caller_headers("news")),
    ):
        body = assert_error(refused, 400, "invalid_input", field="start_token")
        assert "another listing" in body["message"]


def test_only_the_services_own_secret_makes_a_token_it_takes(graph, gateway, user_service):
    ann, token = following_with_a_second_page(graph, gateway, user_service)
    listing = ["following", ann]
    path = f"/v1/users/{ann}/following"
    mine = PageTokens(SECRET.encode()).encode_id(position_of(token), listing)
    assert graph.get(path, query_string={"limit": 1, "start_token": mine}, headers=gateway).get_json()[
        "following"] == graph.get(path, query_string={"limit": 1, "start_token": token}, headers=gateway).get_json()[
        "following"]  # the service signs with the secret it was given
    for other in OTHER_SECRETS:
        forged = other.encode_id(position_of(token), listing)
        body = assert_error(graph.get(path, query_string={"start_token": forged}, headers=gateway), 400,
                            "invalid_input", field="start_token")
        assert "changed" in body["message"]


def test_the_walk_over_every_edge_is_signed_too(graph, gateway, user_service, service_environment):
    following_with_a_second_page(graph, gateway, user_service)
    news = service_environment.caller_headers("news")
    token = graph.get(WALK, query_string={"limit": 1}, headers=news).get_json()["next_token"]
    assert graph.get(WALK, query_string={"limit": 1, "start_token": token}, headers=news).status_code == 200
    for other in OTHER_SECRETS:
        forged = other.encode_id(position_of(token), ["all-follows"])
        assert_error(graph.get(WALK, query_string={"start_token": forged}, headers=news), 400, "invalid_input",
                     field="start_token")
