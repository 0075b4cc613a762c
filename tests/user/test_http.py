"""The user service's internal REST API, wired as in production (real PostgreSQL and NATS)."""
from __future__ import annotations

import pytest
from delinkcious.contracts.events import USER_CREATED, USERS_STREAM
from delinkcious.user.app import DEFINITION

from tests.support.assertions import assert_error
from tests.support.jetstream import wait_for_events
from tests.support.services import unique_username


@pytest.fixture(scope="module")
def user_app(service_environment):
    with service_environment.running(DEFINITION, allowed_callers="api-gateway,social-graph") as (_runtime, app):
        yield app


@pytest.fixture
def client(user_app, service_environment):
    client = user_app.test_client()
    headers = service_environment.caller_headers()

    def call(method: str, path: str, **kwargs):
        kwargs.setdefault("headers", {}).update(headers)
        return client.open(path, method=method, **kwargs)

    return call


def login(client, login_name: str, subject: str | None = None, **extra):
    return client("POST", "/v1/logins", json={"provider": "github", "subject": subject or login_name,
                                              "login": login_name, **extra})




def test_login_lookup_and_event(client, service_environment):
    name = unique_username("ann")
    created = login(client, name.upper(), email="ann@example.com", name="Ann")
    assert created.status_code == 201
    body = created.get_json()
    assert body["created"] is True and body["user"]["username"] == name and body["user"]["email"] == "ann@example.com"
    again = login(client, name.upper())
    assert again.status_code == 200 and again.get_json()["created"] is False

    profile = client("GET", f"/v1/users/{name}")
    assert profile.status_code == 200 and profile.get_json()["name"] == "Ann"
    assert client("HEAD", f"/v1/users/{name}").status_code == 200
    assert client("HEAD", f"/v1/users/{unique_username()}").status_code == 404
    assert_error(client("GET", f"/v1/users/{unique_username()}"), 404, "not_found")
    assert_error(client("GET", "/v1/users/Bad_Name"), 400, "invalid_input", "username")

    [event] = wait_for_events(service_environment.nats_url, USERS_STREAM.name, USER_CREATED, 1, author=name)
    assert event["event_type"] == "user_created" and event["username"] == name and "email" not in event


def test_token_endpoints(client):
    name = unique_username("tok")
    login(client, name)
    issued = client("POST", f"/v1/users/{name}/tokens")
    assert issued.status_code == 201
    token = issued.get_json()
    assert token["token"].startswith("dlk_") and token["username"] == name and token["expires_at"].endswith("Z")

    verified = client("POST", "/v1/tokens/verify", json={"token": token["token"]})
    assert verified.status_code == 200
    assert verified.get_json()["user"]["username"] == name
    assert verified.get_json()["token"]["token_id"] == token["token_id"]

    listed = client("GET", f"/v1/users/{name}/tokens").get_json()["tokens"]
    assert [t["token_id"] for t in listed] == [token["token_id"]] and "token" not in listed[0]

    assert client("POST", "/v1/tokens/revoke", json={"token": token["token"]}).status_code == 204
    assert client("POST", "/v1/tokens/revoke", json={"token": token["token"]}).status_code == 204
    assert_error(client("POST", "/v1/tokens/verify", json={"token": token["token"]}), 401, "invalid_token")

    short = client("POST", f"/v1/users/{name}/tokens", json={"ttl_seconds": 120}).get_json()
    assert client("DELETE", f"/v1/users/{name}/tokens/{short['token_id']}").status_code == 204
    assert_error(client("DELETE", f"/v1/users/{name}/tokens/{short['token_id']}"), 404, "not_found")
    assert_error(client("DELETE", f"/v1/users/{name}/tokens/not-a-uuid"), 404, "not_found")


@pytest.mark.parametrize("path,payload,status,code,field", [
    ("/v1/logins", {"provider": "github"}, 400, "invalid_input", "subject"),
    ("/v1/logins", {"provider": "github", "subject": "1", "email": "x"}, 400, "invalid_input", "email"),
    ("/v1/logins", {"provider": "github", "subject": "1", "role": "admin"}, 400, "invalid_input", "role"),
    ("/v1/tokens/verify", {"token": "guess"}, 401, "invalid_token", None),
    ("/v1/tokens/verify", {"token": "dlk_" + "A" * 43}, 401, "invalid_token", None),
    ("/v1/tokens/verify", {}, 401, "invalid_token", None),
    ("/v1/tokens/verify", {"token": "dlk_x", "extra": 1}, 400, "invalid_input", "extra"),
])
def test_bad_input(client, path, payload, status, code, field):
    assert_error(client("POST", path, json=payload), status, code, field)


def test_bad_token_requests(client):
    name = unique_username("bad")
    login(client, name)
    assert_error(client("POST", f"/v1/users/{name}/tokens", json={"ttl_seconds": "long"}), 400, "invalid_input",
                 "ttl_seconds")
    assert_error(client("POST", f"/v1/users/{name}/tokens", json={"ttl_seconds": 10}), 400, "invalid_input",
                 "ttl_seconds")
    assert_error(client("POST", f"/v1/users/{unique_username()}/tokens"), 404, "not_found")
    assert client("GET", f"/v1/users/{name}/tokens").get_json()["tokens"] == []  # nothing was issued


def test_failed_login_writes_nothing(client):
    name = unique_username("nil")
    assert_error(client("POST", "/v1/logins", json={"provider": "github", "subject": name, "login": name,
                                                    "email": "broken"}), 400, "invalid_input", "email")
    assert client("HEAD", f"/v1/users/{name}").status_code == 404


def test_caller_identity(user_app, service_environment):
    client = user_app.test_client()
    assert_error(client.get("/v1/users/someone"), 401, "unauthenticated")
    assert_error(client.get("/v1/users/someone", headers=service_environment.caller_headers("test-outsider")),
                 403, "forbidden")
