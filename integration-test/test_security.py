"""Authentication and isolation, black-box: what a request without a valid token, or with another user's
parameters, headers, paths or page tokens, gets from the public API. Nothing but its own data, or a 4xx.

**Tokens.** Every operation that the gateway's OpenAPI document (read at run time, so a new route is covered as
soon as it is documented) says needs a token, with each of its methods, answers 401 in the error shape
`{"message", "code"}` to: no token; malformed ones; forged ones (made up in the shape of a real token, or a real
token with one character changed); a token after its logout (revoked).

**Expired tokens cannot be produced from outside.** A login issues a token for the user service's
ACCESS_TOKEN_TTL (30 days by default, 60 s at the least) and the public API has no way to ask for a shorter
one, so a black-box test would wait a minute at best and a month by default. Expiry is proved a layer down
instead: tests/user/test_service_contract.py::test_tokens_expire (a token past its `expires_at` is refused, on
the real PostgreSQL and in memory) and tests/api_gateway/test_gateway.py::
test_both_token_headers_and_a_short_verification_cache (the gateway answers 401 once the user service refuses a
token it used to accept).

**Cross-user.** The gateway takes the caller's identity from the token and from nothing else: internal services
trust only the gateway's caller token (`Delinkcious-Caller-Token`, kit/serving/callers.py), which a client cannot
present. So no query parameter, body field, header or path lets one user read, change or delete another's links,
follows or tokens, and page tokens (`next_token`) are bound to the user and the listing they were issued for.
"""
from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest
import requests
from delinkcious_client import (
    Cleanup,
    GatewaySession,
    Settings,
    User,
    Users,
    assert_error,
    assert_ok,
    eventually,
    protected_operations,
    tampered,
)

# Values that make a request valid, by parameter or field name: a refusal is then about the token alone.
SAMPLE_VALUES = {"url": "https://security.invalid/sample", "title": "sample", "followed": "nobody-here"}

# Headers a proxy, a framework or an internal service might take a user or caller identity from.
IDENTITY_HEADERS = ("X-Username", "X-User", "X-User-Name", "X-Forwarded-User", "X-Remote-User", "Remote-User",
                    "X-Auth-Request-User", "X-Authenticated-User", "X-Caller", "X-User-Id", "X-Delinkcious-User",
                    "Delinkcious-User", "Delinkcious-Caller")
# Query parameters and body fields that might name whose data a request is about.
IDENTITY_PARAMETERS = ("username", "user", "owner", "follower", "as", "user_id", "caller")


def sample_request(operation: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """requests' keyword arguments for a valid request of `operation`: its required query parameters and, if it
    takes a JSON body, one with its required fields."""
    params = {parameter["name"]: SAMPLE_VALUES.get(parameter["name"], "x")
              for parameter in operation.get("parameters", ()) if parameter.get("required")}
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return {"params": params}
    schema = content["application/json"]["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    body = {name: SAMPLE_VALUES.get(name, "x") for name in schema.get("required", ())}
    return {"params": params, "json": body}


def refusals(api: GatewaySession, headers: dict[str, str]) -> list[str]:
    """Every protected operation called with `headers` (and a valid request otherwise): what was not a 401 in the
    error shape, one line each. HEAD and OPTIONS of each route must not answer anything but a 401 either."""
    document = assert_ok(api.get("/v1/openapi.json"))
    operations = protected_operations(document)
    assert {path for _, path, _ in operations} >= {"/v1/me", "/v1/links", "/v1/following", "/v1/followers",
                                                   "/v1/news"}, operations
    problems = []
    for method, path, operation in operations:
        response = api.request(method, path, headers=headers, **sample_request(operation, document))
        try:
            assert_error(response, 401)
        except AssertionError as problem:
            problems.append(f"{method} {path}: {str(problem).splitlines()[0][:300]}")
    for path in sorted({path for method, path, _ in operations if method == "GET"}):
        for method in ("HEAD", "OPTIONS"):
            response = api.request(method, path, headers=headers)
            if response.status_code != 401:
                problems.append(f"{method} {path}: {response.status_code} {response.text[:200]!r}")
    return problems


def made_up_token() -> str:
    """The shape of a Delinkcious token (`dlk_` and 43 URL-safe base64 characters), but no one's."""
    return "dlk_" + secrets.token_urlsafe(32)


def jwt_without_signature(username: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': username, 'username': username})}."


# --- tokens --------------------------------------------------------------------------------------------------


def test_every_protected_operation_answers_401_without_a_token(api: GatewaySession) -> None:
    assert not (problems := refusals(api, {})), "\n".join(problems)


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer not a token"},
    {"Authorization": "Bearer ' OR '1'='1"},
    {"Authorization": "Bearer " + "A" * 4000},
    {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    {"Authorization": "Token dlk_abc"},
    {"Access-Token": "garbage"},
    {"Access-Token": ""},
    {"Authorization": "Bearer ../../v1/users/admin"},
], ids=["bearer-alone", "bearer-blank", "spaces", "sql", "4000-chars", "basic", "other-scheme", "access-token",
        "access-token-blank", "path"])
def test_every_protected_operation_answers_401_to_a_malformed_token(api: GatewaySession,
                                                                   headers: dict[str, str]) -> None:
    assert not (problems := refusals(api, headers)), "\n".join(problems)


def test_every_protected_operation_answers_401_to_a_forged_token(api: GatewaySession, alice: User) -> None:
    for forged in (made_up_token(), tampered(alice.token), alice.token[:-1], alice.token + "A",
                   alice.token.upper(), jwt_without_signature(alice.username)):
        for headers in ({"Authorization": f"Bearer {forged}"}, {"Access-Token": forged}):
            assert not (problems := refusals(api, headers)), f"{headers}:\n" + "\n".join(problems)
    assert_ok(api.get("/v1/me", headers=alice.bearer))  # the real token still works


@pytest.mark.needs_login
def test_every_protected_operation_answers_401_to_a_token_after_its_logout(
        api: GatewaySession, users: Users, settings: Settings) -> None:
    leaving, staying = users.new("leaving"), users.new("staying")
    assert_ok(api.post("/logout", headers=leaving.bearer))
    # Every gateway instance trusts a verified token for a few seconds (TOKEN_CACHE_SECONDS): wait that out.
    eventually(lambda: api.get("/v1/me", headers=leaving.bearer).status_code == 401, settings.wait_timeout,
               "the revoked token to be refused")
    for headers in (leaving.bearer, leaving.access_token):
        assert not (problems := refusals(api, headers)), f"{headers}:\n" + "\n".join(problems)
    # Logging out ends the presented token only.
    assert assert_ok(api.get("/v1/me", headers=staying.bearer))["username"] == staying.username


@pytest.mark.needs_login
def test_logging_out_cannot_revoke_someone_elses_token(api: GatewaySession, alice: User, bob: User) -> None:
    assert_ok(api.post("/logout", headers=bob.bearer, json={"token": alice.token},
                       params={"token": alice.token, "username": alice.username}))
    for _ in range(3):
        assert assert_ok(api.get("/v1/me", headers=alice.bearer))["username"] == alice.username


# --- one user, another's data ------------------------------------------------------------------------------


@pytest.fixture
def alices_link(api: GatewaySession, alice: User, run_id: str, cleanup: Cleanup) -> dict[str, Any]:
    url = f"https://security.invalid/{run_id}/{alice.username}/private"
    link = assert_ok(api.post("/v1/links", json={"url": url, "title": "Alice's own", "description": "hers",
                                                 "tags": [f"secret-{run_id}"]}, headers=alice.bearer), 201)
    cleanup.delete_link(alice, url)
    return link


def links_of(api: GatewaySession, user: User) -> dict[str, dict[str, Any]]:
    body = assert_ok(api.get("/v1/links", params={"limit": 100}, headers=user.bearer))
    return {link["url"]: link for link in body["links"]}


def assert_unchanged(api: GatewaySession, owner: User, link: dict[str, Any]) -> None:
    now = links_of(api, owner)[link["url"]]
    for key in ("title", "description", "tags", "created_at", "updated_at"):
        assert now[key] == link[key], (key, now, link)


def test_another_user_cannot_read_change_or_delete_a_users_links(
        api: GatewaySession, alice: User, bob: User, alices_link: dict[str, Any], cleanup: Cleanup) -> None:
    url = alices_link["url"]
    for params in ({}, {"url_regex": "security"}, {"title_regex": "Alice"}, {"tag": alices_link["tags"][0]},
                   {"description_regex": "hers"}):
        assert url not in {link["url"] for link in assert_ok(api.get("/v1/links", params=params,
                                                                     headers=bob.bearer))["links"]}, params
    assert_error(api.put("/v1/links", json={"url": url, "title": "taken over"}, headers=bob.bearer), 404)
    assert_error(api.put("/v1/links", json={"url": url, "add_tags": ["bob-was-here"]}, headers=bob.bearer), 404)
    assert_error(api.delete("/v1/links", params={"url": url}, headers=bob.bearer), 404)
    # Bob saving the same URL makes a link of his own; Alice's is untouched by it and by its removal.
    assert_ok(api.post("/v1/links", json={"url": url, "title": "Bob's copy"}, headers=bob.bearer), 201)
    cleanup.delete_link(bob, url)
    assert_ok(api.delete("/v1/links", params={"url": url}, headers=bob.bearer), 200, 204)
    assert_unchanged(api, alice, alices_link)


def test_no_parameter_header_or_path_lets_one_user_act_as_another(
        api: GatewaySession, alice: User, bob: User, alices_link: dict[str, Any]) -> None:
    url, name = alices_link["url"], alice.username
    seen: list[requests.Response] = []

    def call(method: str, path: str, **kwargs: Any) -> requests.Response:
        response = api.request(method, path, **kwargs)
        seen.append(response)
        assert response.status_code < 500, f"{method} {path} {kwargs} -> {response.status_code} {response.text}"
        return response

    identity_query = {parameter: name for parameter in IDENTITY_PARAMETERS}
    for headers in [{header: name} for header in IDENTITY_HEADERS] + [
            {"Delinkcious-Caller-Token": alice.token}, {"Delinkcious-Caller-Token": "api-gateway"},
            {"Access-Token": alice.token}, {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}]:
        # Bob's own token wins over every other header (Authorization before Access-Token, DESIGN §2).
        as_bob = {**headers, **bob.bearer}
        me = assert_ok(call("GET", "/v1/me", headers=as_bob))
        assert me["username"] == bob.username, (headers, me)
        listed = call("GET", "/v1/links", params=identity_query, headers=as_bob)
        if listed.status_code == 200:
            assert url not in {link["url"] for link in listed.json()["links"]}, headers
        else:
            assert_error(listed, 400)
        assert call("PUT", "/v1/links", json={"url": url, "title": "taken over"}, headers=as_bob).status_code in (
            400, 404)
        assert call("DELETE", "/v1/links", params={"url": url, **identity_query},
                    headers=as_bob).status_code in (400, 404)
    # Body fields naming someone are refused (the bodies' models forbid unknown fields) or change nothing.
    for field in IDENTITY_PARAMETERS:
        assert call("PUT", "/v1/links", json={"url": url, "title": "taken over", field: name},
                    headers=bob.bearer).status_code in (400, 404)
        assert call("POST", "/v1/links", json={"url": url, "title": "planted", field: name},
                    headers=bob.bearer).status_code == 400, field
    # Paths that might reach another user's data, or the internal services' routes, are not routes here.
    for path in (f"/v1/users/{name}/links", f"/v1/users/{name}", f"/v1/users/{name}/tokens", f"/v1/links/{name}",
                 f"/v1/me/../users/{name}/links", f"/v1/%2e%2e/users/{name}/links",
                 f"/v1/links%2f..%2fusers%2f{name}%2flinks", f"/internal/v1/users/{name}", "/v1/tokens",
                 "/v1/me/tokens", f"/v1/following/{name}", f"/v1/news/{name}", f"/v1/followers/{name}"):
        for method in ("GET", "PUT", "DELETE"):
            response = call(method, path, headers=bob.bearer, params={"url": url})
            assert response.status_code in (400, 404, 405), f"{method} {path} -> {response.status_code}"
    for response in seen:  # nothing Bob was answered shows Alice's token
        assert alice.token not in response.text, response.url
    assert_unchanged(api, alice, alices_link)


def test_no_one_can_make_others_follow_or_unfollow(
        api: GatewaySession, alice: User, bob: User, users: Users, cleanup: Cleanup) -> None:
    carol = users.new("carol")
    assert_ok(api.post("/v1/following", json={"followed": carol.username}, headers=alice.bearer), 200, 201)
    cleanup.unfollow(alice, carol.username)
    for headers in [{header: alice.username} for header in IDENTITY_HEADERS]:
        as_bob = {**headers, **bob.bearer}
        # Bob asking to follow himself "as Alice" is Bob following himself: a 400.
        assert_error(api.post("/v1/following", json={"followed": bob.username}, headers=as_bob), 400)
        api.delete("/v1/following", params={"followed": carol.username, "follower": alice.username},
                   headers=as_bob)
    for field in IDENTITY_PARAMETERS:  # refused as unknown fields, or Bob following Carol himself
        followed = api.post("/v1/following", json={"followed": carol.username, field: alice.username},
                            headers=bob.bearer)
        if followed.status_code == 400:
            assert_error(followed, 400, field=field)
        else:
            assert_ok(followed, 200, 201)
            cleanup.unfollow(bob, carol.username)
    following = assert_ok(api.get("/v1/following", params={"limit": 100}, headers=alice.bearer))["following"]
    assert carol.username in following and bob.username not in following, following
    assert alice.username not in assert_ok(api.get("/v1/followers", headers=bob.bearer))["followers"]
    assert alice.username in assert_ok(api.get("/v1/followers", headers=carol.bearer))["followers"]


def test_no_answer_shows_a_token(api: GatewaySession, alice: User, bob: User) -> None:
    """The only answer that carries an access token is the login's own; no route lists a user's tokens."""
    me = assert_ok(api.get("/v1/me", headers=alice.bearer))
    assert alice.token not in json.dumps(me) and not any("token" in key for key in me), me
    for path in ("/v1/tokens", "/v1/me/tokens", f"/v1/users/{alice.username}/tokens"):
        assert_error(api.get(path, headers=bob.bearer), 404)


# --- page tokens -------------------------------------------------------------------------------------------


def test_a_link_page_token_works_only_for_its_user_and_listing_and_unchanged(
        api: GatewaySession, alice: User, bob: User, run_id: str, cleanup: Cleanup) -> None:
    tag = f"paged-{run_id}"
    for index in range(3):
        url = f"https://security.invalid/{run_id}/{alice.username}/page/{index}"
        assert_ok(api.post("/v1/links", json={"url": url, "title": f"page {index}", "tags": [tag]},
                           headers=alice.bearer), 201)
        cleanup.delete_link(alice, url)
    first = assert_ok(api.get("/v1/links", params={"limit": 1, "tag": tag}, headers=alice.bearer))
    token = first["next_token"]
    assert token, first
    # Its owner, in the same listing: the next page.
    assert len(assert_ok(api.get("/v1/links", params={"limit": 1, "tag": tag, "start_token": token},
                                 headers=alice.bearer))["links"]) == 1
    # Another user, the same listing and token: 400, not Alice's next page.
    assert_error(api.get("/v1/links", params={"limit": 1, "tag": tag, "start_token": token},
                         headers=bob.bearer), 400, field="start_token")
    # Changed, or in another listing (no filter, or another list altogether): 400.
    assert_error(api.get("/v1/links", params={"limit": 1, "tag": tag, "start_token": tampered(token)},
                         headers=alice.bearer), 400, field="start_token")
    assert_error(api.get("/v1/links", params={"limit": 1, "start_token": token}, headers=alice.bearer), 400,
                 field="start_token")
    for path in ("/v1/news", "/v1/following", "/v1/followers"):
        assert_error(api.get(path, params={"start_token": token}, headers=alice.bearer), 400, field="start_token")


def test_a_news_page_token_works_only_for_its_user_and_unchanged(
        api: GatewaySession, alice: User, bob: User, users: Users, run_id: str, cleanup: Cleanup,
        settings: Settings) -> None:
    author = users.new("author")
    assert_ok(api.post("/v1/following", json={"followed": author.username}, headers=alice.bearer), 200, 201)
    cleanup.unfollow(alice, author.username)
    for index in range(3):
        url = f"https://security.invalid/{run_id}/{author.username}/news/{index}"
        assert_ok(api.post("/v1/links", json={"url": url, "title": f"news {index}"}, headers=author.bearer), 201)
        cleanup.delete_link(author, url)

    def second_page_token() -> str | None:
        body = assert_ok(api.get("/v1/news", params={"limit": 1}, headers=alice.bearer))
        return body["next_token"] if len(body["events"]) == 1 else None

    token = eventually(second_page_token, settings.wait_timeout, "a first page of news with a next_token")
    assert_ok(api.get("/v1/news", params={"limit": 1, "start_token": token}, headers=alice.bearer))
    assert_error(api.get("/v1/news", params={"limit": 1, "start_token": token}, headers=bob.bearer), 400,
                 field="start_token")
    assert_error(api.get("/v1/news", params={"limit": 1, "start_token": tampered(token)}, headers=alice.bearer),
                 400, field="start_token")
    assert_error(api.get("/v1/links", params={"start_token": token}, headers=alice.bearer), 400,
                 field="start_token")
