"""The news use cases against BOTH the in-memory and the Redis feed store."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
import redis
from delinkcious.contracts.events import FOLLOWED, LINK_ADDED, LINK_DELETED, UNFOLLOWED, Event
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.news.events import on_follow, on_link_event, on_unfollow
from delinkcious.news.service import NewsService
from delinkcious.news.store import _FEEDS_PER_SCRIPT_CALL, InMemoryFeedStore, RedisFeedStore

from tests.support.services import unique_username

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["memory", "redis"])
def service(request) -> NewsService:
    if request.param == "memory":
        store = InMemoryFeedStore()
    else:
        store = RedisFeedStore(redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True))
    return NewsService(store, feed_max_length=5, authored_history=50)


def link_event(author: str, url: str, at: datetime, event_type: str = "link_added", **data) -> Event:
    subject = LINK_DELETED if event_type == "link_deleted" else LINK_ADDED
    return Event(subject=subject, event_type=event_type, author=author, occurred_at=at,
                 data={"username": author, "url": url, "title": f"title of {url}", **data})


def follow_event(follower: str, followed: str, at: datetime, follow: bool = True) -> Event:
    return Event(subject=FOLLOWED if follow else UNFOLLOWED, event_type="followed" if follow else "unfollowed",
                 author=follower, occurred_at=at, data={"follower": follower, "followed": followed})


def feed(service: NewsService, user: str, limit: int = 100) -> list[tuple[str, str]]:
    items, _ = service.get_news(user, "", limit)
    return [(item.event_type, item.url) for item in items]


@pytest.fixture
def people() -> tuple[str, str, str]:
    return unique_username("author"), unique_username("reader"), unique_username("other")


def test_followers_see_an_authors_events_newest_first(service, people):
    author, reader, other = people
    on_follow(service, follow_event(reader, author, T0))
    on_link_event(service, link_event(author, "https://a/1", T0 + timedelta(seconds=1)))
    on_link_event(service, link_event(author, "https://a/1", T0 + timedelta(seconds=2), "link_deleted"))
    assert feed(service, reader) == [("link_deleted", "https://a/1"), ("link_added", "https://a/1")]
    assert feed(service, other) == []
    assert feed(service, author) == []  # authors do not follow themselves


def test_a_follower_sees_only_events_from_the_moment_they_follow(service, people):
    author, reader, _ = people
    on_link_event(service, link_event(author, "https://before", T0))
    on_follow(service, follow_event(reader, author, T0 + timedelta(seconds=10)))
    on_link_event(service, link_event(author, "https://after", T0 + timedelta(seconds=20)))
    assert feed(service, reader) == [("link_added", "https://after")]


def test_events_processed_before_the_follow_event_arrived_still_reach_the_follower(service, people):
    author, reader, _ = people
    # The follow happened first, but its event is processed after the author's event.
    on_link_event(service, link_event(author, "https://raced", T0 + timedelta(seconds=2)))
    on_follow(service, follow_event(reader, author, T0 + timedelta(seconds=1)))
    assert feed(service, reader) == [("link_added", "https://raced")]


def test_unfollow_stops_new_events_even_when_events_arrive_out_of_order(service, people):
    author, reader, _ = people
    on_follow(service, follow_event(reader, author, T0))
    on_link_event(service, link_event(author, "https://while-following", T0 + timedelta(seconds=1)))
    on_unfollow(service, follow_event(reader, author, T0 + timedelta(seconds=2), follow=False))
    on_link_event(service, link_event(author, "https://after-unfollow", T0 + timedelta(seconds=3)))
    # A stale follow event (older than the unfollow) changes nothing.
    on_follow(service, follow_event(reader, author, T0 + timedelta(milliseconds=500)))
    on_link_event(service, link_event(author, "https://still-unfollowed", T0 + timedelta(seconds=4)))
    assert feed(service, reader) == [("link_added", "https://while-following")]
    on_follow(service, follow_event(reader, author, T0 + timedelta(seconds=5)))
    on_link_event(service, link_event(author, "https://followed-again", T0 + timedelta(seconds=6)))
    assert feed(service, reader)[0] == ("link_added", "https://followed-again")


def test_redelivered_events_never_duplicate_a_feed_item(service, people):
    author, reader, _ = people
    follow = follow_event(reader, author, T0)
    added = link_event(author, "https://once", T0 + timedelta(seconds=1))
    for _ in range(3):
        on_follow(service, follow)
        on_link_event(service, added)
    assert feed(service, reader) == [("link_added", "https://once")]


def test_feeds_are_capped_to_the_newest_items(service, people):
    author, reader, _ = people
    on_follow(service, follow_event(reader, author, T0))
    for index in range(8):
        on_link_event(service, link_event(author, f"https://cap/{index}", T0 + timedelta(seconds=index + 1)))
    assert [url for _, url in feed(service, reader)] == [f"https://cap/{index}" for index in (7, 6, 5, 4, 3)]


def test_a_fan_out_larger_than_one_script_call_reaches_and_caps_every_feed(service, people):
    # RedisFeedStore writes feeds in script calls of _FEEDS_PER_SCRIPT_CALL: cross two chunk boundaries.
    author, reader, _ = people
    readers = [f"{reader}-{index}" for index in range(2 * _FEEDS_PER_SCRIPT_CALL + 1)]
    for follower in readers:
        on_follow(service, follow_event(follower, author, T0))
    events = [link_event(author, f"https://fan/{index}", T0 + timedelta(seconds=index + 1)) for index in range(7)]
    for event in events:
        assert on_link_event(service, event) == len(readers)
    # Redelivered: the newest event must not duplicate, an evicted one must stay evicted.
    on_link_event(service, events[-1])
    on_link_event(service, events[0])
    newest_five = [f"https://fan/{index}" for index in (6, 5, 4, 3, 2)]
    for follower in readers:
        assert [url for _, url in feed(service, follower)] == newest_five, follower


def test_walking_all_pages_returns_each_item_once_even_with_equal_timestamps(service, people):
    author, reader, _ = people
    big = NewsService(service._store, feed_max_length=1000)
    on_follow(big, follow_event(reader, author, T0))
    moments = [T0 + timedelta(seconds=second) for second in (1, 2, 2, 2, 2, 3, 4, 4, 5)]
    for index, moment in enumerate(moments):
        on_link_event(big, link_event(author, f"https://page/{index}", moment))
    for limit in (1, 2, 3, 4, 10):
        seen, token = [], ""
        for _ in itertools.count():
            items, token = big.get_news(reader, token, limit)
            seen += [item.url for item in items]
            if not token:
                break
        assert sorted(seen) == sorted(f"https://page/{index}" for index in range(9)), limit
        assert len(seen) == len(set(seen)) == 9


@pytest.mark.parametrize("username,token,limit,field", [
    ("Bad_Name", "", 10, "username"),
    ("ann", "", 101, "limit"),
    ("ann", "", -1, "limit"),
    ("ann", "garbage", 10, "start_token"),
])
def test_bad_requests_name_the_field(service, username, token, limit, field):
    with pytest.raises(InvalidInput) as raised:
        service.get_news(username, token, limit)
    assert raised.value.field == field


def test_a_token_belongs_to_its_user(service, people):
    author, reader, other = people
    on_follow(service, follow_event(reader, author, T0))
    for index in range(3):
        on_link_event(service, link_event(author, f"https://t/{index}", T0 + timedelta(seconds=index + 1)))
    _, token = service.get_news(reader, "", 1)
    with pytest.raises(InvalidInput):
        service.get_news(other, token, 1)


def test_malformed_events_are_rejected(service, people):
    author, _, _ = people
    with pytest.raises(InvalidInput):
        on_link_event(service, Event(subject=LINK_ADDED, event_type="link_added", author=author, data={}))
    with pytest.raises(InvalidInput):
        on_follow(service, Event(subject=FOLLOWED, event_type="followed", author=author,
                                   data={"follower": author, "followed": "Not Valid"}))


def test_a_feed_store_outage_is_unavailable_not_an_error(private_redis):
    from delinkcious.kit.core.errors import Unavailable

    client = redis.Redis.from_url(private_redis.url, decode_responses=True, socket_timeout=1,
                                  socket_connect_timeout=1)
    service = NewsService(RedisFeedStore(client), feed_max_length=5)
    service.get_news("ann", "", 10)
    private_redis.stop()
    with pytest.raises(Unavailable):
        service.get_news("ann", "", 10)
    with pytest.raises(Unavailable):  # the consumer naks it and JetStream redelivers later
        on_link_event(service, link_event("ann", "https://x", T0))
    private_redis.start()
    assert service.get_news("ann", "", 10) == ([], "")
