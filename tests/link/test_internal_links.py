"""A user's links, most recently changed first, for the services that keep a projection of links (news
rebuilds its feeds from it): the use case against BOTH repositories, and `GET /internal/v1/users/{username}/links`
wired as in production (real PostgreSQL, NATS JetStream, outbox relay), driven through Flask's test client."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest
from delinkcious.kit.core.clock import parse_timestamp
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.kit.core.pages import encode_cursor
from delinkcious.link.app import DEFINITION
from delinkcious.link.domain import LinkChanges, LinkFilter, NewLink
from delinkcious.link.repository import InMemoryLinkRepository, InMemoryUnitOfWork, PostgresUnitOfWork
from delinkcious.link.service import LinkService

from tests.support.assertions import assert_error
from tests.support.backends import Backend, outbox_events, postgres_database_fixture, published_events
from tests.support.services import unique_username

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)

postgres_database = postgres_database_fixture(DEFINITION)


class SteppingClock:
    """Each reading is `step` after the previous one; step 0 stamps several writes with the same time."""

    def __init__(self) -> None:
        self.now, self.step = T0, timedelta(seconds=1)

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


@pytest.fixture(params=["memory", "postgres"])
def backend(request) -> Backend:
    if request.param == "memory":
        uow = InMemoryUnitOfWork(InMemoryLinkRepository())
        return Backend("memory", lambda: uow, partial(published_events, uow))
    database = request.getfixturevalue("postgres_database")
    return Backend("postgres", lambda: PostgresUnitOfWork(database.transaction), partial(outbox_events, database))


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture
def service(backend, clock) -> LinkService:
    return LinkService(backend.unit_of_work, max_links_per_user=100, clock=clock)


def changed_order(service: LinkService, user: str, limit: int) -> list[str]:
    urls, token = [], None
    for _ in itertools.count():
        links, token = service.recently_changed(user, start_token=token, limit=limit)
        assert len(links) <= limit
        urls += [link.url for link in links]
        if token is None:
            return urls


def test_links_come_most_recently_changed_first_each_once(service, clock):
    user, other = unique_username(), unique_username()
    for index in range(4):
        service.add_link(user, NewLink.parse({"url": f"https://c.example/{index}", "title": f"T{index}"}))
    clock.step = timedelta(0)  # three links stamped with the same time: the id decides between them
    for index in range(4, 7):
        service.add_link(user, NewLink.parse({"url": f"https://c.example/{index}", "title": f"T{index}"}))
    clock.step = timedelta(seconds=1)
    service.update_link(user, LinkChanges.parse({"url": "https://c.example/1", "title": "changed"}))
    service.add_link(other, NewLink.parse({"url": "https://c.example/other", "title": "O"}))
    expected = [f"https://c.example/{index}" for index in (1, 6, 5, 4, 3, 2, 0)]
    for limit in (1, 2, 3, 7, 100):
        assert changed_order(service, user, limit) == expected, limit
    [first], _ = service.recently_changed(user, start_token=None, limit=1)
    assert first.title == "changed" and first.updated_at > first.created_at


def test_a_link_changed_during_the_walk_is_not_seen_twice_before_its_change(service):
    user = unique_username()
    for index in range(3):
        service.add_link(user, NewLink.parse({"url": f"https://w.example/{index}", "title": "t"}))
    page, token = service.recently_changed(user, start_token=None, limit=1)
    assert [link.url for link in page] == ["https://w.example/2"]
    service.update_link(user, LinkChanges.parse({"url": "https://w.example/2", "title": "again"}))
    rest, token = service.recently_changed(user, start_token=token, limit=10)
    assert [link.url for link in rest] == ["https://w.example/1", "https://w.example/0"] and token is None


@pytest.mark.parametrize("token", [
    "garbage",
    "e30",  # {}
    encode_cursor(["not a time", 3], ["recently-changed", "{user}"]),
    encode_cursor(["2026-06-01T12:00:00Z", 0], ["recently-changed", "{user}"]),
    encode_cursor(["2026-06-01T12:00:00Z", True], ["recently-changed", "{user}"]),
    encode_cursor([1, 3], ["recently-changed", "{user}"]),
    encode_cursor(7, ["recently-changed", "{user}"]),
])
def test_bad_tokens_are_invalid_input(service, token):
    user = "{user}"
    with pytest.raises(InvalidInput) as raised:
        service.recently_changed(user, start_token=token, limit=10)
    assert raised.value.field == "start_token"


def test_tokens_are_bound_to_their_user_and_listing(service):
    user, other = unique_username(), unique_username()
    for index in range(3):
        service.add_link(user, NewLink.parse({"url": f"https://b.example/{index}", "title": "t"}))
    _, token = service.recently_changed(user, start_token=None, limit=1)
    with pytest.raises(InvalidInput, match="another listing"):
        service.recently_changed(other, start_token=token, limit=1)
    with pytest.raises(InvalidInput, match="another listing"):
        service.list_links(user, LinkFilter(), start_token=token, limit=1)
    _, list_token = service.list_links(user, LinkFilter(), start_token=None, limit=1)
    with pytest.raises(InvalidInput, match="another listing"):
        service.recently_changed(user, start_token=list_token, limit=1)


# --- over HTTP -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def link_client(service_environment):
    with service_environment.running(DEFINITION, allowed_callers="api-gateway,news") as (_runtime, app):
        yield app.test_client()


def path(user: str) -> str:
    return f"/internal/v1/users/{user}/links"


def test_news_reads_any_users_links_most_recently_changed_first(link_client, service_environment):
    gateway, news = service_environment.caller_headers("api-gateway"), service_environment.caller_headers("news")
    user = unique_username()
    for index in range(5):
        response = link_client.post(f"/v1/users/{user}/links", json={"url": f"https://h.example/{index}",
                                                                    "title": f"T{index}", "tags": ["x"]},
                                    headers=gateway)
        assert response.status_code == 201
    link_client.put(f"/v1/users/{user}/links", json={"url": "https://h.example/0", "title": "T0b"}, headers=gateway)
    link_client.delete(f"/v1/users/{user}/links", query_string={"url": "https://h.example/3"}, headers=gateway)

    links, token = [], None
    while True:
        response = link_client.get(path(user), query_string={"limit": 2, **({"start_token": token} if token else {})},
                                   headers=news)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert set(body) == {"links", "next_token"}
        links += body["links"]
        if (token := body["next_token"]) is None:
            break
    assert [link["url"] for link in links] == [f"https://h.example/{index}" for index in (0, 4, 2, 1)]
    assert all(set(link) == {"url", "title", "created_at", "updated_at"} for link in links)  # nothing more
    changed = links[0]
    assert changed["title"] == "T0b" and parse_timestamp(changed["updated_at"]) > parse_timestamp(changed["created_at"])
    assert all(link["created_at"] == link["updated_at"] for link in links[1:])
    empty = link_client.get(path(unique_username()), headers=news).get_json()
    assert empty == {"links": [], "next_token": None}


def test_only_news_may_read_links_this_way(link_client, service_environment):
    user = unique_username()
    assert_error(link_client.get(path(user)), 401, "unauthenticated")
    assert_error(link_client.get(path(user), headers={"Delinkcious-Caller-Token": "forged"}), 401, "unauthenticated")
    assert_error(link_client.get(path(user), headers=service_environment.caller_headers("test-outsider")), 403,
                 "forbidden")
    gateway = service_environment.caller_headers("api-gateway")
    refused = assert_error(link_client.get(path(user), headers=gateway), 403, "forbidden")
    assert "api-gateway" in refused["message"]
    # Checked before anything else of the request: a refused caller gets 403 whatever it asks.
    assert_error(link_client.get(path("Not_Valid"), query_string={"start_token": "x"}, headers=gateway), 403,
                 "forbidden")
    assert link_client.get(path(user), headers=service_environment.caller_headers("news")).status_code == 200
    # The gateway's own routes are as they were, and news may not call them: it reads, it never acts for a user.
    assert link_client.get(f"/v1/users/{user}/links", headers=gateway).status_code == 200
    news = service_environment.caller_headers("news")
    for method in ("GET", "POST", "PUT", "DELETE"):
        refused = assert_error(link_client.open(f"/v1/users/{user}/links", method=method, headers=news,
                                                json={"url": "https://n.example/", "title": "t"}), 403, "forbidden")
        assert refused["message"] == f"caller 'news' may not call {method} /v1/users/<username>/links"
    assert link_client.get(f"/v1/users/{user}/links", headers=gateway).get_json()["links"] == []  # nothing added


def test_bad_parameters_are_400_naming_them(link_client, service_environment):
    news = service_environment.caller_headers("news")
    user = unique_username()
    for index in range(2):
        link_client.post(f"/v1/users/{user}/links", json={"url": f"https://p.example/{index}", "title": "t"},
                         headers=service_environment.caller_headers("api-gateway"))
    token = link_client.get(path(user), query_string={"limit": 1}, headers=news).get_json()["next_token"]
    for bad in ("garbage", encode_cursor(["2026-06-01T12:00:00Z", -4], ["recently-changed", user])):
        assert_error(link_client.get(path(user), query_string={"start_token": bad}, headers=news), 400,
                     "invalid_input", field="start_token")
    assert_error(link_client.get(path(unique_username()), query_string={"start_token": token}, headers=news), 400,
                 "invalid_input", field="start_token")
    for limit in ("0", "1001", "many"):
        assert_error(link_client.get(path(user), query_string={"limit": limit}, headers=news), 400, "invalid_input",
                     field="limit")
    assert link_client.get(path(user), query_string={"limit": "1000"}, headers=news).status_code == 200
    assert_error(link_client.get(path("Not_Valid"), headers=news), 400, "invalid_input", field="username")
    assert_error(link_client.post(path(user), json={}, headers=news), 405, "method_not_allowed")
