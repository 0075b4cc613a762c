"""The social-graph service's internal REST API, wired as in production (real PostgreSQL, NATS
JetStream, outbox relay, the user-created consumer), driven through Flask's test client, with a
stand-in user service behind USER_SERVICE_URL."""
from __future__ import annotations

import re
import threading
import uuid
from typing import Any

import pytest
from delinkcious.contracts.events import FOLLOWED, SOCIAL_STREAM, UNFOLLOWED, USER_CREATED
from delinkcious.kit.core.clock import format_timestamp, utc_now
from delinkcious.local.servers import free_port
from delinkcious.social_graph.app import DEFINITION
from delinkcious.social_graph.service import KNOWN_USERS_CONSUMER

from tests.support.assertions import assert_error, assert_live_then_ready
from tests.support.jetstream import (
    publish_event,
    read_events,
    wait_for_events,
    wait_until,
)
from tests.support.services import unique_username
from tests.support.threads import run_together

CALLER_TOKEN = "social-graph-test-caller-token"
SOCIAL_SUBJECTS = "delinkcious.social.v1.>"


@pytest.fixture(scope="module")
def graph_app(service_environment, user_service):
    with service_environment.running(DEFINITION, user_service_url=user_service.url, caller_token=CALLER_TOKEN,
                                     allowed_callers="api-gateway,news") as (runtime, app):
        yield runtime, app


class Api:
    def __init__(self, runtime, app, headers: dict[str, str], user_service) -> None:
        self.runtime = runtime
        self.client = app.test_client()
        self.headers = headers
        self.user_service = user_service

    def user(self, prefix: str = "u") -> str:
        """A new user the (stand-in) user service knows of."""
        username = unique_username(prefix)
        self.user_service.users.add(username)
        return username

    def call(self, method: str, path: str, **kwargs: Any):
        kwargs["headers"] = {**self.headers, **kwargs.get("headers", {})}
        return self.client.open(path, method=method, **kwargs)

    def follow(self, follower: str, followed: Any, **kwargs: Any):
        return self.call("POST", f"/v1/users/{follower}/following", json={"followed": followed}, **kwargs)

    def unfollow(self, follower: str, followed: str):
        return self.call("DELETE", f"/v1/users/{follower}/following/{followed}")

    def following(self, user: str, **query: Any):
        return self.call("GET", f"/v1/users/{user}/following", query_string=query)

    def followers(self, user: str, **query: Any):
        return self.call("GET", f"/v1/users/{user}/followers", query_string=query)

    # --- what is stored ---------------------------------------------------------------------------
    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with self.runtime.db.transaction() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def edges_of(self, follower: str) -> list[tuple[str, str]]:
        rows = self.query("SELECT follower, followed FROM follows WHERE follower = %s ORDER BY id", follower)
        return [(row["follower"], row["followed"]) for row in rows]

    def outbox_of(self, follower: str) -> list[dict[str, Any]]:
        return self.query("SELECT subject, payload, published_at FROM outbox WHERE payload->>'author' = %s "
                          "ORDER BY id", follower)

    def known(self, username: str) -> bool:
        return bool(self.query("SELECT 1 FROM known_users WHERE username = %s", username))


@pytest.fixture
def api(graph_app, service_environment, user_service) -> Api:
    runtime, app = graph_app
    return Api(runtime, app, service_environment.caller_headers(), user_service)




def published(nats_url: str, follower: str, count: int) -> list[dict[str, Any]]:
    return wait_for_events(nats_url, SOCIAL_STREAM.name, SOCIAL_SUBJECTS, count, author=follower)


def user_created_event(username: str, event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id or str(uuid.uuid4()), "event_type": "user_created", "author": username,
            "occurred_at": format_timestamp(utc_now()), "request_id": "signup-1", "username": username,
            "name": "Carol Example"}


def test_follow_list_unfollow_round_trip(api, service_environment):
    ann, bob = api.user("ann"), api.user("bob")
    created = api.follow(ann, bob, headers={"X-Request-Id": "req-follow-1"})
    assert created.status_code == 201
    body = created.get_json()
    assert (body["follower"], body["followed"]) == (ann, bob) and body["created_at"].endswith("Z")

    again = api.follow(ann, bob)
    assert again.status_code == 200 and again.get_json() == body  # idempotent: the same edge

    assert api.following(ann).get_json() == {"following": [bob], "next_token": None}
    assert api.followers(bob).get_json() == {"followers": [ann], "next_token": None}
    assert api.edges_of(ann) == [(ann, bob)]

    for _ in range(2):  # unfollowing is idempotent too
        removed = api.unfollow(ann, bob)
        assert removed.status_code == 204 and removed.get_data() == b""
    assert api.following(ann).get_json()["following"] == []
    assert api.followers(bob).get_json()["followers"] == []

    events = published(service_environment.nats_url, ann, 2)
    assert [event["_subject"] for event in events] == [FOLLOWED, UNFOLLOWED]
    assert [event["event_type"] for event in events] == ["followed", "unfollowed"]
    followed = events[0]
    assert (followed["author"], followed["follower"], followed["followed"]) == (ann, ann, bob)
    assert followed["occurred_at"] == body["created_at"]  # the event is the edge's creation
    assert followed["request_id"] == "req-follow-1" and followed["_headers"]["X-Request-Id"] == "req-follow-1"
    assert followed["_headers"]["Nats-Msg-Id"] == followed["event_id"]
    assert len({event["event_id"] for event in events}) == 2
    assert len(api.outbox_of(ann)) == 2  # no event for the repeated follow or unfollow


def test_following_yourself_is_400_cannot_follow_self(api):
    ann = api.user()
    assert_error(api.follow(ann, ann), 400, "cannot_follow_self", "followed")
    assert api.edges_of(ann) == [] and api.outbox_of(ann) == [] and api.user_service.looked_up(ann) == []


def test_following_an_unknown_user_is_404_and_writes_nothing(api):
    ann, ghost = api.user(), unique_username("ghost")
    body = assert_error(api.follow(ann, ghost), 404, "not_found")
    assert body["field"] == "followed" and ghost in body["message"]
    assert api.user_service.looked_up(ghost) == [CALLER_TOKEN]  # asked, as social-graph
    assert api.edges_of(ann) == [] and api.outbox_of(ann) == [] and not api.known(ghost)


def test_a_user_unknown_to_the_projection_is_checked_with_the_user_service_and_remembered(api):
    ann, bob, carol = api.user(), api.user(), api.user()
    assert not api.known(carol)
    assert api.follow(ann, carol).status_code == 201
    assert api.user_service.looked_up(carol) == [CALLER_TOKEN]
    assert api.known(carol)
    assert api.follow(bob, carol).status_code == 201
    assert api.user_service.looked_up(carol) == [CALLER_TOKEN]  # the projection answered this time


def consumed(api: Api, outcome: str) -> float:
    text = api.client.get("/metrics").get_data(as_text=True)
    match = re.search(r'delinkcious_events_consumed_total\{consumer="%s",outcome="%s",service="social-graph"\} '
                      r'(\S+)' % (KNOWN_USERS_CONSUMER, outcome), text)
    return float(match.group(1)) if match else 0.0


def test_users_from_user_created_events_need_no_user_service_call(api, service_environment):
    nats_url = service_environment.nats_url
    ann, carol = api.user(), unique_username("carol")  # carol: unknown to the stand-in
    event = user_created_event(carol)
    duplicates_before = consumed(api, "duplicate")
    publish_event(nats_url, USER_CREATED, event)
    assert wait_until(lambda: api.known(carol))
    assert api.follow(ann, carol).status_code == 201
    assert api.user_service.looked_up(carol) == []

    publish_event(nats_url, USER_CREATED, event)  # a redelivery of the same event: harmless
    assert wait_until(lambda: consumed(api, "duplicate") > duplicates_before)
    assert api.query("SELECT count(*) AS n FROM processed_events WHERE event_id = %s",
                     event["event_id"])[0]["n"] == 1
    assert len(api.query("SELECT username FROM known_users WHERE username = %s", carol)) == 1
    publish_event(nats_url, USER_CREATED, user_created_event(carol))  # the same user, another event
    assert api.follow(api.user(), carol).status_code == 201
    assert api.user_service.looked_up(carol) == []


def test_malformed_user_created_events_are_dropped_not_retried_forever(api, service_environment):
    nats_url = service_environment.nats_url
    rejected_before = consumed(api, "rejected")
    publish_event(nats_url, USER_CREATED, {"event_id": "no-envelope"})
    publish_event(nats_url, USER_CREATED, user_created_event("Not_Valid"))
    good = unique_username("dave")
    publish_event(nats_url, USER_CREATED, user_created_event(good))
    assert wait_until(lambda: api.known(good))
    assert wait_until(lambda: consumed(api, "rejected") >= rejected_before + 2)
    assert not api.known("Not_Valid")


@pytest.mark.parametrize("status", [503, 500, 403])
def test_a_user_service_that_cannot_answer_is_503(api, status):
    ann, bob = api.user(), api.user()
    api.user_service.status = status
    try:
        response = api.follow(ann, bob)
    finally:
        api.user_service.status = None
    assert_error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "5"
    assert api.edges_of(ann) == [] and not api.known(bob)
    assert api.follow(ann, bob).status_code == 201  # and all is well once it answers


def test_an_unreachable_user_service_is_503_with_retry_after(service_environment):
    dead = f"http://127.0.0.1:{free_port()}"
    with service_environment.running(DEFINITION, user_service_url=dead, caller_token=CALLER_TOKEN) as (runtime, app):
        ann, bob = unique_username(), unique_username()
        response = app.test_client().post(f"/v1/users/{ann}/following", json={"followed": bob},
                                          headers=service_environment.caller_headers())
        assert_error(response, 503, "unavailable")
        assert response.headers["Retry-After"] == "5"
        with runtime.db.transaction() as cursor:
            cursor.execute("SELECT count(*) AS n FROM follows WHERE follower = %s", (ann,))
            assert cursor.fetchone()["n"] == 0


@pytest.mark.parametrize("payload,field", [
    ({}, "followed"),
    ({"followed": None}, "followed"),
    ({"followed": 42}, "followed"),
    ({"followed": ["bob"]}, "followed"),
    ({"followed": "Bob"}, "followed"),
    ({"followed": "-bob"}, "followed"),
    ({"followed": "b" * 40}, "followed"),
    ({"followed": "bob", "follower": "eve"}, "follower"),
])
def test_invalid_follow_requests_are_400_naming_the_field_and_write_nothing(api, payload, field):
    ann = api.user()
    response = api.call("POST", f"/v1/users/{ann}/following", json=payload)
    assert_error(response, 400, "invalid_input", field)
    assert api.edges_of(ann) == [] and api.outbox_of(ann) == []


@pytest.mark.parametrize("kwargs", [
    {"data": "{not json", "content_type": "application/json"},
    {"data": '["bob"]', "content_type": "application/json"},
    {"data": "followed=bob", "content_type": "application/x-www-form-urlencoded"},
    {},
])
def test_malformed_bodies_are_400_and_write_nothing(api, kwargs):
    ann = api.user()
    assert_error(api.call("POST", f"/v1/users/{ann}/following", **kwargs), 400, "invalid_input", "body")
    assert api.edges_of(ann) == []


def test_oversized_body_is_413(api):
    response = api.call("POST", f"/v1/users/{api.user()}/following", json={"followed": "x" * 70_000})
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/users/Not_Valid/following"),
    ("GET", "/v1/users/-x/followers"),
    ("POST", "/v1/users/a--b/following"),
    ("DELETE", "/v1/users/UPPER/following/bob"),
])
def test_invalid_username_in_the_path_is_400(api, method, path):
    assert_error(api.call(method, path, json={"followed": "bob"}), 400, "invalid_input", "username")


def test_unfollow_validates_the_name_and_never_asks_the_user_service(api):
    ann, ghost = api.user(), unique_username("ghost")
    assert_error(api.unfollow(ann, "Not_Valid"), 400, "invalid_input", "followed")
    assert api.unfollow(ann, ghost).status_code == 204  # nothing to remove: fine
    assert api.unfollow(ann, ann).status_code == 204
    assert api.user_service.looked_up(ghost) == [] and api.outbox_of(ann) == []


@pytest.mark.parametrize("query,field", [
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "x"}, "limit"),
    ({"start_token": "%%%"}, "start_token"), ({"start_token": "eyJhIjowfQ"}, "start_token"),
])
def test_bad_query_parameters_are_400(api, query, field):
    assert_error(api.following(api.user(), **query), 400, "invalid_input", field)
    assert_error(api.followers(api.user(), **query), 400, "invalid_input", field)


def test_a_page_token_only_fits_its_own_listing(api):
    ann = api.user()
    for _ in range(3):
        api.follow(ann, api.user())
    token = api.following(ann, limit=1).get_json()["next_token"]
    assert token
    assert api.following(ann, limit=1, start_token=token).status_code == 200
    assert_error(api.followers(ann, start_token=token), 400, "invalid_input", "start_token")
    assert_error(api.following(api.user(), start_token=token), 400, "invalid_input", "start_token")


def test_default_and_maximum_page_sizes(api):
    star = api.user()
    fans = [api.user() for _ in range(101)]
    api.query("INSERT INTO follows (follower, followed, created_at) SELECT fan, %s, now() "
              "FROM unnest(%s::text[]) AS fan RETURNING id", star, fans)
    first = api.followers(star).get_json()
    assert len(first["followers"]) == 100 and first["next_token"]
    assert len(api.followers(star, limit=1000).get_json()["followers"]) == 101


def walk(api: Api, list_call, user: str, key: str, limit: int, between=None) -> list[str]:
    seen: list[str] = []
    token = None
    while True:
        query = {"limit": limit, **({"start_token": token} if token else {})}
        body = list_call(user, **query).get_json()
        seen += body[key]
        token = body["next_token"]
        if not token:
            return seen
        if between:
            between()


def test_pages_are_stable_while_follows_are_added(api):
    ann, star = api.user(), api.user()
    followed = [api.user() for _ in range(20)]
    fans = [api.user() for _ in range(20)]
    for name in followed:
        assert api.follow(ann, name).status_code == 201
    for fan in fans:
        assert api.follow(fan, star).status_code == 201
    stop = threading.Event()
    statuses: list[int] = []

    def keep_following() -> None:
        while not stop.is_set() and len(statuses) < 20:
            statuses.append(api.follow(ann, api.user()).status_code)
            statuses.append(api.follow(api.user(), star).status_code)

    racer = threading.Thread(target=keep_following)
    racer.start()
    try:
        # Besides the racing thread, one new edge on each list between every two pages for certain.
        following = walk(api, api.following, ann, "following", 6,
                         between=lambda: api.follow(ann, api.user()))
        followers = walk(api, api.followers, star, "followers", 6,
                         between=lambda: api.follow(api.user(), star))
    finally:
        stop.set()
        racer.join()
    assert statuses and set(statuses) == {201}
    for seen, original in ((following, followed), (followers, fans)):
        assert len(seen) == len(set(seen)), "a user was listed twice"
        assert [name for name in seen if name in original] == list(reversed(original)), "a user was skipped"


def test_fifty_concurrent_follows_of_one_pair_leave_one_edge_and_one_event(api, graph_app, service_environment):
    runtime, app = graph_app
    ann, bob = api.user(), api.user()  # bob is not in the projection yet: every request may ask for him
    start = threading.Barrier(50)
    statuses: list[int] = []

    def follow() -> None:
        client = app.test_client()
        start.wait()
        response = client.post(f"/v1/users/{ann}/following", json={"followed": bob}, headers=api.headers)
        statuses.append(response.status_code)

    run_together([follow] * 50)
    assert sorted(statuses) == [200] * 49 + [201]
    assert api.edges_of(ann) == [(ann, bob)]
    assert api.query("SELECT count(*) AS n FROM known_users WHERE username = %s", bob)[0]["n"] == 1
    [row] = api.outbox_of(ann)
    assert row["subject"] == FOLLOWED
    assert wait_until(lambda: all(row["published_at"] for row in api.outbox_of(ann)))
    events = [event for event in read_events(service_environment.nats_url, SOCIAL_STREAM.name, FOLLOWED)
              if event["author"] == ann]
    assert len(events) == 1 and (events[0]["follower"], events[0]["followed"]) == (ann, bob)


def test_caller_identity_is_required(api, graph_app, service_environment):
    _runtime, app = graph_app
    client = app.test_client()
    ann = api.user()
    for method, path in (("GET", f"/v1/users/{ann}/following"), ("GET", f"/v1/users/{ann}/followers"),
                         ("POST", f"/v1/users/{ann}/following"), ("DELETE", f"/v1/users/{ann}/following/bob")):
        assert_error(client.open(path, method=method, json={"followed": "bob"}), 401, "unauthenticated")
        assert_error(client.open(path, method=method, json={"followed": "bob"},
                                 headers={"Delinkcious-Caller-Token": "forged"}), 401, "unauthenticated")
        assert_error(client.open(path, method=method, json={"followed": "bob"},
                                 headers=service_environment.caller_headers("test-outsider")), 403, "forbidden")
    assert api.edges_of(ann) == []
    assert client.get(f"/v1/users/{ann}/followers",
                      headers=service_environment.caller_headers("api-gateway")).status_code == 200
    # news is served (it reads /internal/v1/follows) but may not call the routes that act for a user.
    assert_error(client.get(f"/v1/users/{ann}/followers", headers=service_environment.caller_headers("news")),
                 403, "forbidden")
    assert client.get("/healthz/ping").status_code == 200  # probes need no caller identity


def test_unknown_routes_and_methods_use_the_error_shape(api):
    assert_error(api.call("GET", "/v1/users/ann/friends"), 404, "not_found")
    response = api.call("PUT", "/v1/users/ann/following")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_health_and_metrics(api, graph_app):
    _runtime, app = graph_app
    client = app.test_client()
    checks = assert_live_then_ready(client)
    assert checks["postgres"]["ok"] and checks["nats"]["ok"] and checks["outbox"]["ok"]
    api.follow(api.user(), api.user())
    text = client.get("/metrics").get_data(as_text=True)
    assert ('delinkcious_http_requests_total{method="POST",route="/v1/users/<username>/following",'
            'service="social-graph",status="201"}') in text
    published_metric = ('delinkcious_events_published_total{service="social-graph",'
                        'subject="delinkcious.social.v1.followed"}')
    assert wait_until(lambda: published_metric in client.get("/metrics").get_data(as_text=True))
    assert "delinkcious_outbox_pending_events" in text
