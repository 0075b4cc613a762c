"""The link service's internal REST API, wired as in production (real PostgreSQL, NATS JetStream,
outbox relay, consumers), driven through Flask's test client."""
from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from delinkcious.contracts.events import LINK_CHECKED, LINKS_STREAM
from delinkcious.kit.core.clock import format_timestamp, utc_now
from delinkcious.link.app import DEFINITION

from tests.support.assertions import assert_error, assert_live_then_ready
from tests.support.jetstream import publish_event, wait_for_events, wait_until
from tests.support.services import unique_username


@pytest.fixture(scope="module")
def link_app(service_environment):
    with service_environment.running(DEFINITION, max_links_per_user=100) as (runtime, app):
        yield runtime, app


@pytest.fixture
def api(link_app, service_environment):
    _runtime, app = link_app
    client = app.test_client()
    headers = service_environment.caller_headers()

    class Api:
        user = unique_username()

        def call(self, method: str, path: str = "", *, user: str | None = None, **kwargs: Any):
            kwargs.setdefault("headers", {}).update(headers)
            return client.open(f"/v1/users/{user or self.user}/links{path}", method=method, **kwargs)

        def add(self, url: str, title: str = "T", **fields: Any):
            return self.call("POST", json={"url": url, "title": title, **fields})

        def list(self, **query: Any):
            return self.call("GET", query_string=query)

    return Api()




def test_add_list_update_delete_round_trip(api, service_environment):
    created = api.add("https://example.com/a", "A", description="first", tags=["X", "y"])
    assert created.status_code == 201
    body = created.get_json()
    assert body["url"] == "https://example.com/a" and body["tags"] == ["x", "y"] and body["status"] == "pending"
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")

    listed = api.list().get_json()
    assert [link["url"] for link in listed["links"]] == ["https://example.com/a"] and listed["next_token"] is None

    updated = api.call("PUT", json={"url": "https://example.com/a", "title": "A2", "remove_tags": ["x"]})
    assert updated.status_code == 200 and updated.get_json()["title"] == "A2"
    assert updated.get_json()["tags"] == ["y"]

    deleted = api.call("DELETE", query_string={"url": "https://example.com/a"})
    assert deleted.status_code == 200
    assert api.list().get_json()["links"] == []

    events = wait_for_events(service_environment.nats_url, LINKS_STREAM.name, "delinkcious.links.v1.>", 3,
                             author=api.user)
    assert [event["event_type"] for event in events] == ["link_added", "link_updated", "link_deleted"]
    assert [event["_subject"] for event in events] == [
        "delinkcious.links.v1.added", "delinkcious.links.v1.updated", "delinkcious.links.v1.deleted"]
    added = events[0]
    assert added["url"] == "https://example.com/a" and added["title"] == "A" and added["tags"] == ["x", "y"]
    assert added["_headers"]["Nats-Msg-Id"] == added["event_id"]
    assert len({event["event_id"] for event in events}) == 3


def test_request_id_is_echoed_and_travels_with_the_event(api, service_environment):
    response = api.call("POST", json={"url": "https://example.com/rid", "title": "t"},
                        headers={"X-Request-Id": "req-abc-123"})
    assert response.headers["X-Request-Id"] == "req-abc-123"
    [event] = wait_for_events(service_environment.nats_url, LINKS_STREAM.name, "delinkcious.links.v1.added", 1,
                              author=api.user)
    assert event["request_id"] == "req-abc-123" and event["_headers"]["X-Request-Id"] == "req-abc-123"
    generated = api.list()
    assert len(generated.headers["X-Request-Id"]) >= 16


def test_duplicate_is_409_with_the_existing_link(api):
    api.add("https://example.com/dup", "original")
    response = api.add("HTTPS://EXAMPLE.com:443/dup/", "again")
    body = assert_error(response, 409, "duplicate_link")
    assert body["link"]["title"] == "original"


def test_quota_is_409_quota_exceeded(api, link_app):
    for index in range(100):
        assert api.add(f"https://quota.example/{index}").status_code == 201
    body = assert_error(api.add("https://quota.example/over"), 409, "quota_exceeded")
    assert body["limit"] == 100


@pytest.mark.parametrize("payload,field", [
    ({"title": "t"}, "url"),
    ({"url": "notaurl", "title": "t"}, "url"),
    ({"url": "https://e.com", "title": ""}, "title"),
    ({"url": "https://e.com", "title": "t" * 501}, "title"),
    ({"url": "https://e.com", "title": "t", "description": "d" * 5001}, "description"),
    ({"url": "https://e.com", "title": "t", "tags": ["a"] * 1 + ["b" * 65]}, "tags"),
    ({"url": "https://e.com", "title": "t", "tags": "a,b"}, "tags"),
    ({"url": "https://e.com", "title": "t", "colour": "red"}, "colour"),
])
def test_invalid_links_are_400_naming_the_field_and_write_nothing(api, payload, field):
    assert_error(api.call("POST", json=payload), 400, "invalid_input", field)
    assert api.list().get_json()["links"] == []


@pytest.mark.parametrize("kwargs", [
    {"data": "{not json", "content_type": "application/json"},
    {"data": "[1, 2]", "content_type": "application/json"},
    {"data": "url=x", "content_type": "application/x-www-form-urlencoded"},
    {},
])
def test_malformed_bodies_are_400(api, kwargs):
    assert_error(api.call("POST", **kwargs), 400, "invalid_input", "body")


def test_oversized_body_is_413(api):
    response = api.call("POST", json={"url": "https://e.com", "title": "t", "description": "x" * 70_000})
    assert_error(response, 413, "payload_too_large")


def test_invalid_username_is_400(api):
    assert_error(api.call("GET", user="Not_Valid"), 400, "invalid_input", "username")


@pytest.mark.parametrize("parameter", ["url_regex", "title_regex", "description_regex"])
def test_invalid_regex_is_400(api, parameter):
    assert_error(api.list(**{parameter: "([a-z"}), 400, "invalid_input", parameter)


@pytest.mark.parametrize("query,field", [
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "x"}, "limit"),
    ({"start_token": "%%%"}, "start_token"), ({"tag": "x" * 65}, "tag"),
])
def test_bad_query_parameters_are_400(api, query, field):
    assert_error(api.list(**query), 400, "invalid_input", field)


def test_missing_links_are_404(api):
    assert_error(api.call("PUT", json={"url": "https://nope.example", "title": "x"}), 404, "not_found")
    assert_error(api.call("DELETE", query_string={"url": "https://nope.example"}), 404, "not_found")
    assert_error(api.call("DELETE"), 400, "invalid_input", "url")


def test_filters_and_pages_over_http(api):
    for index in range(7):
        api.add(f"https://page.example/{index}", f"title {index}", tags=["odd" if index % 2 else "even"])
    seen: list[str] = []
    token = None
    while True:
        query = {"limit": 3, "tag": "even"}
        if token:
            query["start_token"] = token
        body = api.list(**query).get_json()
        seen += [link["url"] for link in body["links"]]
        token = body["next_token"]
        if not token:
            break
    assert seen == [f"https://page.example/{i}" for i in (6, 4, 2, 0)]
    titles = api.list(title_regex="^title [5-6]$").get_json()["links"]
    assert [link["title"] for link in titles] == ["title 6", "title 5"]


def test_pagination_is_stable_while_another_thread_inserts(api):
    for index in range(30):
        api.add(f"https://stable.example/{index:03d}")
    stop = threading.Event()
    inserted: list[int] = []

    def keep_inserting() -> None:
        while not stop.is_set() and len(inserted) < 20:
            response = api.add(f"https://stable.example/new-{len(inserted)}")
            inserted.append(response.status_code)

    inserter = threading.Thread(target=keep_inserting)
    inserter.start()
    try:
        seen: list[str] = []
        token = None
        while True:
            query = {"limit": 7, **({"start_token": token} if token else {})}
            body = api.list(**query).get_json()
            seen += [link["url"] for link in body["links"]]
            token = body["next_token"]
            if not token:
                break
            # Besides the racing thread, one insert between every two pages for certain.
            assert api.add(f"https://stable.example/between-{len(seen)}").status_code == 201
    finally:
        stop.set()
        inserter.join()
    assert inserted and set(inserted) == {201}
    original = [f"https://stable.example/{i:03d}" for i in range(30)]
    assert len(seen) == len(set(seen)), "a link was returned twice"
    assert [url for url in seen if url in original] == list(reversed(original)), "a link was skipped"


def test_caller_identity_is_required(api, link_app, service_environment):
    _runtime, app = link_app
    client = app.test_client()
    path = f"/v1/users/{api.user}/links"
    assert_error(client.get(path), 401, "unauthenticated")
    assert_error(client.get(path, headers={"Delinkcious-Caller-Token": "forged"}), 401, "unauthenticated")
    assert_error(client.get(path, headers=service_environment.caller_headers("test-outsider")), 403, "forbidden")
    assert client.get(path, headers=service_environment.caller_headers("api-gateway")).status_code == 200
    assert client.get("/healthz/ping").status_code == 200  # probes need no caller identity


def test_unknown_routes_and_methods_use_the_error_shape(link_app, service_environment):
    _runtime, app = link_app
    client = app.test_client()
    headers = service_environment.caller_headers()
    assert_error(client.get("/nope", headers=headers), 404, "not_found")
    response = client.patch(f"/v1/users/{unique_username()}/links", headers=headers)
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_health_endpoints(link_app):
    _runtime, app = link_app
    client = app.test_client()
    assert client.get("/healthz/ping").status_code == 200
    checks = assert_live_then_ready(client)
    assert checks["postgres"]["ok"] and checks["nats"]["ok"] and checks["startup"]["ok"]
    assert "pending_events" in checks["outbox"]["detail"] and "lag_seconds" in checks["outbox"]["detail"]
    assert all("latency_ms" in check for check in checks.values())


def test_metrics_endpoint_has_red_and_domain_metrics(api, link_app):
    api.add("https://metrics.example")
    api.list(limit="bad")
    _runtime, app = link_app
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'delinkcious_http_requests_total{method="POST",route="/v1/users/<username>/links",service="link",' \
           'status="201"}' in text
    assert 'status="400"' in text
    assert "delinkcious_http_request_duration_seconds_bucket" in text
    assert "delinkcious_events_published_total" in text
    assert "delinkcious_outbox_pending_events" in text


def check_event(user: str, url: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "event_type": "link_checked", "author": "link-checker",
        "occurred_at": format_timestamp(utc_now()), "username": user, "url": url, "status": status,
        "checked_at": format_timestamp(utc_now()), **extra,
    }


def test_link_checked_events_set_the_status_once(api, service_environment, link_app):
    api.add("https://checked.example/page")
    event = check_event(api.user, "https://checked.example/page", "invalid", http_status=404, reason="HTTP 404")
    nats_url = service_environment.nats_url
    publish_event(nats_url, LINK_CHECKED, event)
    publish_event(nats_url, LINK_CHECKED, event)  # a redelivery of the same event (different message)

    def status() -> str:
        return api.list().get_json()["links"][0]["status"]

    assert wait_until(lambda: status() == "invalid")
    link = api.list().get_json()["links"][0]
    assert link["http_status"] == 404 and link["status_reason"] == "HTTP 404" and link["checked_at"]
    runtime, _app = link_app
    with runtime.db.transaction() as cursor:
        cursor.execute("SELECT count(*) AS n FROM processed_events WHERE event_id = %s", (event["event_id"],))
        assert cursor.fetchone()["n"] == 1


def test_malformed_link_checked_events_are_dropped_not_retried_forever(api, service_environment):
    api.add("https://poison.example")
    publish_event(service_environment.nats_url, LINK_CHECKED, {"event_id": "x"})  # no envelope
    publish_event(service_environment.nats_url, LINK_CHECKED,
                  check_event(api.user, "https://poison.example", "maybe"))  # invalid status
    good = check_event(api.user, "https://poison.example", "valid", http_status=200)
    publish_event(service_environment.nats_url, LINK_CHECKED, good)
    assert wait_until(lambda: api.list().get_json()["links"][0]["status"] == "valid")

