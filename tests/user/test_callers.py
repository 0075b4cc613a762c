"""Who may call what on the user service (least privilege), wired as in production with real caller tokens.

The finding (issue 11): social-graph's caller token, which the user service must accept for the existence check,
could mint an access token for any user. social-graph needs `HEAD /v1/users/{username}` and nothing else; the
access tokens, logins and profiles are the API gateway's alone."""
from __future__ import annotations

import secrets

import pytest
from delinkcious.kit.serving.callers import CALLER_TOKEN_HEADER
from delinkcious.user.app import DEFINITION

from tests.support.assertions import assert_error
from tests.support.services import unique_username


@pytest.fixture(scope="module")
def user_callers(tmp_path_factory):
    directory = tmp_path_factory.mktemp("user-callers")
    tokens = {caller: secrets.token_urlsafe(32) for caller in ("api-gateway", "social-graph", "news")}
    for caller, token in tokens.items():
        (directory / caller).write_text(token)
    return directory, tokens


@pytest.fixture(scope="module")
def user_client(service_environment, user_callers):
    directory, tokens = user_callers
    with service_environment.running(DEFINITION, trusted_callers_dir=directory,
                                     allowed_callers="api-gateway,social-graph") as (_runtime, app):
        client = app.test_client()

        def call(caller: str, method: str, path: str, **kwargs):
            return client.open(path, method=method, headers={CALLER_TOKEN_HEADER: tokens[caller]}, **kwargs)

        yield call


def sign_up(user_client) -> str:
    name = unique_username("perm")
    response = user_client("api-gateway", "POST", "/v1/logins",
                           json={"provider": "github", "subject": name, "login": name, "email": f"{name}@example.com"})
    assert response.status_code == 201, response.get_data(as_text=True)
    return name


def test_social_graphs_token_cannot_mint_an_access_token(user_client):
    name = sign_up(user_client)
    for body in ({}, {"ttl_seconds": 3600}):
        refused = assert_error(user_client("social-graph", "POST", f"/v1/users/{name}/tokens", json=body), 403,
                               "forbidden")
        assert refused["message"] == "caller 'social-graph' may not call POST /v1/users/<username>/tokens"
        assert "token" not in refused
    # Nothing was issued: the user has no token at all.
    listed = user_client("api-gateway", "GET", f"/v1/users/{name}/tokens")
    assert listed.status_code == 200 and listed.get_json()["tokens"] == []
    # The gateway still mints them, and social-graph cannot check, list, revoke or log in with one either.
    issued = user_client("api-gateway", "POST", f"/v1/users/{name}/tokens")
    assert issued.status_code == 201
    token, token_id = issued.get_json()["token"], issued.get_json()["token_id"]
    for method, path, body in (("POST", "/v1/tokens/verify", {"token": token}),
                               ("POST", "/v1/tokens/revoke", {"token": token}),
                               ("GET", f"/v1/users/{name}/tokens", None),
                               ("DELETE", f"/v1/users/{name}/tokens/{token_id}", None),
                               ("POST", "/v1/logins", {"provider": "github", "subject": name, "login": name})):
        assert_error(user_client("social-graph", method, path, json=body), 403, "forbidden")
    verified = user_client("api-gateway", "POST", "/v1/tokens/verify", json={"token": token})
    assert verified.status_code == 200 and verified.get_json()["user"]["username"] == name  # not revoked


def test_social_graph_may_ask_only_whether_a_user_exists(user_client):
    name = sign_up(user_client)
    assert user_client("social-graph", "HEAD", f"/v1/users/{name}").status_code == 200
    assert user_client("social-graph", "HEAD", f"/v1/users/{unique_username()}").status_code == 404
    # The profile (email, name) is the gateway's to read.
    assert_error(user_client("social-graph", "GET", f"/v1/users/{name}"), 403, "forbidden")
    assert user_client("api-gateway", "GET", f"/v1/users/{name}").get_json()["email"] == f"{name}@example.com"


def test_a_caller_the_service_does_not_serve_is_refused_everywhere(user_client):
    name = sign_up(user_client)
    refused = assert_error(user_client("news", "GET", f"/v1/users/{name}"), 403, "forbidden")
    assert refused["message"] == "caller 'news' may not call this service"
    assert user_client("news", "HEAD", f"/v1/users/{name}").status_code == 403
