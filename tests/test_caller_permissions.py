"""Caller permissions per endpoint, least privilege (kit/callers.py), over the real Flask apps of the internal
REST services with real caller tokens.

The catalogue (services/catalogue.py) says which callers may call a service; each service's http.py says which of
them may call each endpoint. Here: the two agree both ways (no caller the catalogue does not allow, no allowed
caller that no endpoint admits), and every (caller, endpoint) pair answers as the table below says: the callers
an endpoint admits get anything but 403, every other caller gets 403 `forbidden` before a parameter is read.

The table is who calls what today, read from the callers' clients: the gateway's
(services/api_gateway/resources.py and identity.py), social-graph's (services/social_graph/user_directory.py) and
news' (services/news/sources.py). A route or a grant added without updating it fails here.
"""
from __future__ import annotations

import secrets
import uuid

import pytest
from delinkcious.catalogue import SERVICES, get_service
from delinkcious.contracts.news.v1 import news_pb2
from delinkcious.kit.serving.callers import CALLER_TOKEN_HEADER
from delinkcious.kit.serving.web import is_ops_path

from tests.support.services import unique_username

GATEWAY, NEWS, SOCIAL_GRAPH = "api-gateway", "news", "social-graph"

# service -> (method, route) -> the callers that use it.
EXPECTED = {
    "user": {
        ("POST", "/v1/logins"): {GATEWAY},  # identity.py: login
        ("GET", "/v1/users/<username>"): {GATEWAY},  # resources.py: GET /v1/me
        # user_directory.py: does a user exist? (and the gateway, whose GET covers HEAD)
        ("HEAD", "/v1/users/<username>"): {GATEWAY, SOCIAL_GRAPH},
        ("POST", "/v1/users/<username>/tokens"): {GATEWAY},  # identity.py: mints the login's access token
        # Token listing and revocation by id: the user's tokens, managed for them by the gateway only.
        ("GET", "/v1/users/<username>/tokens"): {GATEWAY},
        ("HEAD", "/v1/users/<username>/tokens"): {GATEWAY},
        ("DELETE", "/v1/users/<username>/tokens/<token_id>"): {GATEWAY},
        ("POST", "/v1/tokens/verify"): {GATEWAY},  # identity.py: every API call's bearer token
        ("POST", "/v1/tokens/revoke"): {GATEWAY},  # resources.py: logout
    },
    "social-graph": {  # resources.py: Following, Followers; sources.py: FollowsSource
        **{(method, "/v1/users/<username>/following"): {GATEWAY} for method in ("GET", "HEAD", "POST")},
        **{(method, "/v1/users/<username>/followers"): {GATEWAY} for method in ("GET", "HEAD")},
        ("DELETE", "/v1/users/<username>/following/<followed>"): {GATEWAY},
        **{(method, "/internal/v1/follows"): {NEWS} for method in ("GET", "HEAD")},
    },
    "link": {  # resources.py: Links; sources.py: LinksSource
        **{(method, "/v1/users/<username>/links"): {GATEWAY} for method in ("GET", "HEAD", "POST", "PUT", "DELETE")},
        **{(method, "/internal/v1/users/<username>/links"): {NEWS} for method in ("GET", "HEAD")},
    },
}
# Every service's name is a caller name; "test-outsider" is a token no service serves.
CALLERS = tuple(facts.name for facts in SERVICES) + ("test-outsider",)


@pytest.fixture(scope="module")
def permission_callers(tmp_path_factory):
    directory = tmp_path_factory.mktemp("permission-callers")
    for caller in CALLERS:
        (directory / caller).write_text(secrets.token_urlsafe(32))
    return directory


@pytest.fixture(scope="module")
def apps(service_environment, permission_callers):
    """The three internal REST services as deployed: ALLOWED_CALLERS from the catalogue, a token per caller."""
    from contextlib import ExitStack

    from delinkcious.link.app import DEFINITION as LINK
    from delinkcious.social_graph.app import DEFINITION as SOCIAL_GRAPH_SERVICE
    from delinkcious.user.app import DEFINITION as USER

    def allowed(name: str) -> str:
        return ",".join(get_service(name).allowed_callers)

    with ExitStack() as stack:
        running = {
            "user": stack.enter_context(service_environment.running(
                USER, trusted_callers_dir=permission_callers, allowed_callers=allowed("user"))),
            # Nothing here reaches the user service: a follow request without a body is refused first.
            "social-graph": stack.enter_context(service_environment.running(
                SOCIAL_GRAPH_SERVICE, trusted_callers_dir=permission_callers, allowed_callers=allowed("social-graph"),
                user_service_url="http://127.0.0.1:9", caller_token="unused")),
            "link": stack.enter_context(service_environment.running(
                LINK, trusted_callers_dir=permission_callers, allowed_callers=allowed("link"))),
        }
        yield {name: app for name, (_runtime, app) in running.items()}


def routes(app) -> set[tuple[str, str]]:
    """(method, route) of every endpoint a caller can call (not the operator endpoints, not OPTIONS)."""
    return {(method, rule.rule) for rule in app.url_map.iter_rules()
            if rule.endpoint != "static" and not is_ops_path(rule.rule)
            for method in rule.methods - {"OPTIONS"}}


def concrete(route: str) -> str:
    """A path for the route, with values its parameters accept (who may call is checked before they are read)."""
    values = {"<username>": unique_username(), "<followed>": unique_username(), "<token_id>": str(uuid.uuid4())}
    for parameter, value in values.items():
        route = route.replace(parameter, value)
    return route


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_the_grants_are_the_catalogues_callers_and_all_of_them(apps, service):
    permissions = apps[service].extensions["delinkcious.caller_permissions"]
    allowed = set(get_service(service).allowed_callers)
    assert permissions.callers <= allowed, f"{service} grants callers the catalogue does not allow"
    assert permissions.callers == allowed, f"{service}: no endpoint admits {sorted(allowed - permissions.callers)}"


def test_every_internal_rest_service_is_in_the_table():
    rest = {facts.name for facts in SERVICES if facts.allowed_callers and facts.grpc_port is None}
    assert rest == set(EXPECTED)


def test_grpc_services_check_callers_per_service_because_each_has_one_caller_per_method():
    """news is checked per service (kit/grpc_server.py): right while its callers are its every RPC's callers."""
    grpc_services = [facts for facts in SERVICES if facts.grpc_port is not None]
    assert [facts.name for facts in grpc_services] == [NEWS]
    methods = news_pb2.DESCRIPTOR.services_by_name["NewsService"].methods
    assert len(methods) == 1 or len(get_service(NEWS).allowed_callers) == 1, (
        "news' RPCs may now differ in their callers: check them per method")


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_the_table_covers_every_route(apps, service):
    assert routes(apps[service]) == set(EXPECTED[service])


@pytest.mark.parametrize(("service", "method", "route"),
                         [(service, method, route) for service, table in sorted(EXPECTED.items())
                          for method, route in sorted(table)])
def test_each_caller_may_call_exactly_the_endpoints_it_uses(apps, permission_callers, service, method, route):
    client = apps[service].test_client()
    admitted = EXPECTED[service][method, route]
    for caller in CALLERS:
        headers = {CALLER_TOKEN_HEADER: (permission_callers / caller).read_text()}
        path = concrete(route)
        body = {"json": {}} if method in ("POST", "PUT") else {}
        response = client.open(path, method=method, headers=headers, **body)
        if caller in admitted:
            # Whatever the service answers this request (a 400 for the empty body, a 404 for the unknown user, a
            # 401 invalid_token for no token), but no refusal of the caller.
            refusal = response.status_code == 403 or (response.get_json(silent=True) or {}).get("code") == \
                "unauthenticated"
            assert not refusal and response.status_code < 500, (
                caller, method, path, response.status_code, response.get_data(as_text=True))
            continue
        assert response.status_code == 403, (caller, method, path, response.get_data(as_text=True))
        # Refused before any parameter is read: a NUL byte in the query (the kit's 400 for anyone admitted) and a
        # username the service refuses change nothing.
        bad = client.open(path.replace("/users/", "/users/Not_Valid-"), method=method, headers=headers,
                          query_string={"limit": "\0"}, **body)
        assert bad.status_code == 403, (caller, method, path, bad.get_data(as_text=True))
        if method != "HEAD":  # a HEAD answer has no body
            error = response.get_json()
            assert error["code"] == "forbidden" and f"'{caller}'" in error["message"], error
