"""The news feed: what the people you follow save, change and remove shows up within seconds."""

from __future__ import annotations

import time
from typing import Any

import pytest
from delinkcious_client import (
    Cleanup,
    GatewaySession,
    Settings,
    User,
    Users,
    assert_error,
    assert_ok,
    eventually,
    parse_timestamp,
    walk_pages,
)


@pytest.fixture
def site(run_id: str) -> str:
    return f"https://it-{run_id}.news.invalid"


def feed(api: GatewaySession, user: User, limit: int = 100) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = assert_ok(api.get("/v1/news", params={"limit": limit}, headers=user.bearer))[
        "events"
    ]
    return events


def wait_for_event(api: GatewaySession, settings: Settings, user: User, event_type: str, url: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((e for e in feed(api, user) if e["event_type"] == event_type and e["url"] == url), None)

    return eventually(find, settings.wait_timeout, f"{event_type} of {url} in {user.username}'s news")


def add_link(api: GatewaySession, user: User, cleanup: Cleanup, url: str, title: str) -> None:
    assert_ok(api.post("/v1/links", json={"url": url, "title": title}, headers=user.bearer), 201)
    cleanup.delete_link(user, url)


def follow(api: GatewaySession, follower: User, followed: User, cleanup: Cleanup) -> None:
    assert_ok(api.post("/v1/following", json={"followed": followed.username}, headers=follower.bearer), 200, 201)
    cleanup.unfollow(follower, followed.username)


def test_followers_see_what_authors_add_change_and_remove(
    api: GatewaySession, settings: Settings, alice: User, bob: User, cleanup: Cleanup, site: str
) -> None:
    if not alice.fresh:  # pre-issued users: Alice may follow Bob since an earlier run
        assert_ok(api.delete("/v1/following", params={"followed": bob.username}, headers=alice.bearer), 200, 204)
        time.sleep(2)  # the "second or two" the unfollow takes to reach the news service
    before = f"{site}/before-follow"
    add_link(api, bob, cleanup, before, "Saved before Alice followed")
    follow(api, alice, bob, cleanup)
    url = f"{site}/after-follow"
    add_link(api, bob, cleanup, url, "Saved after Alice followed")

    added = wait_for_event(api, settings, alice, "link_added", url)
    assert added["username"] == bob.username
    assert added["title"] == "Saved after Alice followed"
    parse_timestamp(added["timestamp"])
    assert before not in [event["url"] for event in feed(api, alice)]

    assert_ok(api.put("/v1/links", json={"url": url, "title": "Renamed"}, headers=bob.bearer))
    updated = wait_for_event(api, settings, alice, "link_updated", url)
    assert (updated["username"], updated.get("title")) == (bob.username, "Renamed")

    assert_ok(api.delete("/v1/links", params={"url": url}, headers=bob.bearer), 200, 204)
    deleted = wait_for_event(api, settings, alice, "link_deleted", url)
    assert deleted["username"] == bob.username

    mine = [event for event in feed(api, alice) if event["url"] == url]
    assert [event["event_type"] for event in mine] == ["link_deleted", "link_updated", "link_added"]
    times = [parse_timestamp(event["timestamp"]) for event in mine]
    assert times == sorted(times, reverse=True)


def test_news_pages_walk_every_event_once_newest_first(
    api: GatewaySession, settings: Settings, alice: User, bob: User, cleanup: Cleanup, site: str
) -> None:
    follow(api, alice, bob, cleanup)
    urls = [f"{site}/paged/{index}" for index in range(5)]
    for index, url in enumerate(urls):
        add_link(api, bob, cleanup, url, f"Paged {index}")
    wait_for_event(api, settings, alice, "link_added", urls[-1])
    eventually(lambda: set(urls) <= {event["url"] for event in feed(api, alice)}, settings.wait_timeout,
               "all five links in the news")  # fmt: skip

    pages = list(walk_pages(api, "/v1/news", alice, "events", {"limit": 2}))
    assert all(len(page) <= 2 for page in pages)
    events = [event for page in pages for event in page]
    ids = [(event.get("event_id") or (event["event_type"], event["url"], event["timestamp"])) for event in events]
    assert len(ids) == len(set(ids)), "an event came twice while walking the pages"
    ours = [event["url"] for event in events if event["url"] in urls and event["event_type"] == "link_added"]
    assert ours == list(reversed(urls))
    times = [parse_timestamp(event["timestamp"]) for event in events]
    assert times == sorted(times, reverse=True)

    assert_error(api.get("/v1/news", params={"limit": "0"}, headers=alice.bearer), 400, field="limit")
    assert_error(api.get("/v1/news", params={"limit": "101"}, headers=alice.bearer), 400, field="limit")
    assert_error(api.get("/v1/news", params={"start_token": "forged"}, headers=alice.bearer), 400,
                 field="start_token")  # fmt: skip
    assert_error(api.get("/v1/news"), 401)


def test_unfollowing_stops_new_news(
    api: GatewaySession, settings: Settings, users: Users, cleanup: Cleanup, site: str
) -> None:
    author, leaving, staying = users.new("author"), users.new("leaving"), users.new("staying")
    follow(api, leaving, author, cleanup)
    follow(api, staying, author, cleanup)
    first = f"{site}/while-following"
    add_link(api, author, cleanup, first, "Both see this")
    wait_for_event(api, settings, leaving, "link_added", first)

    assert_ok(api.delete("/v1/following", params={"followed": author.username}, headers=leaving.bearer), 200, 204)
    # The unfollow and the next link travel on different streams; give the unfollow the "second or two"
    # events take to arrive, so the link is surely newer than what the news service knows of the unfollow.
    time.sleep(2)
    later = f"{site}/after-unfollow"
    add_link(api, author, cleanup, later, "Only the one still following sees this")
    wait_for_event(api, settings, staying, "link_added", later)  # processed, so it reached every feed it goes to
    assert later not in [event["url"] for event in feed(api, leaving)]
    assert first in [event["url"] for event in feed(api, leaving)]
