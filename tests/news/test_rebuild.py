"""Rebuilding the news store from the services that own its facts (service.StoreRebuild, guard.StoreGuard),
against BOTH the in-memory and a real Redis feed store. The owners (social-graph, link) are stood in for by
`Owners`, a double of our own ports (FollowSource, LinkSource); tests/news/test_rebuild_served.py runs the real
services."""
from __future__ import annotations

import random
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import redis
from delinkcious.contracts.events import LINK_ADDED, LINK_DELETED, LINK_UPDATED, UNFOLLOWED, Event
from delinkcious.kit.core.clock import format_timestamp
from delinkcious.local.servers import RedisServer
from delinkcious.news.domain import FollowEdge, LinkState, to_millis
from delinkcious.news.events import on_link_event, on_unfollow
from delinkcious.news.guard import PROJECTION_REBUILDS, RebuildStopped, StoreGuard
from delinkcious.news.service import FollowSource, LinkSource, NewsService, RebuildAborted, StoreRebuild
from delinkcious.news.store import GENERATION_KEY, REBUILD_LOCK_KEY, InMemoryFeedStore, RedisFeedStore

from tests.support.jetstream import wait_until
from tests.support.servers import serving
from tests.support.threads import raised_together

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
FEED_LENGTH = 4


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Owners(FollowSource, LinkSource):
    """What social-graph and link have now: edges, and each user's links. `during_reads` runs before each
    answer (`during_link_reads` before each answer about links), to make things happen while a rebuild reads."""

    def __init__(self) -> None:
        self.edges: list[FollowEdge] = []
        self.links: dict[str, dict[str, LinkState]] = {}
        self.page_size = 2
        self.follow_walks = 0
        self.during_reads = lambda: None
        self.during_link_reads = lambda: None

    def follow(self, follower: str, followed: str, since: datetime) -> None:
        self.edges.append(FollowEdge(follower, followed, to_millis(since)))

    def save(self, author: str, url: str, title: str, created: datetime, updated: datetime | None = None) -> None:
        self.links.setdefault(author, {})[url] = LinkState(url, title, created, updated or created)

    def pages(self):
        self.follow_walks += 1
        for start in range(0, len(self.edges), self.page_size):
            self.during_reads()
            yield self.edges[start:start + self.page_size]

    def recently_changed(self, author: str, count: int) -> list[LinkState]:
        self.during_reads()
        self.during_link_reads()
        links = sorted(self.links.get(author, {}).values(), key=lambda link: link.updated_at, reverse=True)
        return links[:count]


def link_event(author: str, url: str, title: str, occurred: datetime, event_type: str = "link_added", *,
               created: datetime | None = None, updated: datetime | None = None) -> Event:
    """As the link service publishes it: stamped a little after the change, with the link's own times."""
    subject = {"link_added": LINK_ADDED, "link_updated": LINK_UPDATED, "link_deleted": LINK_DELETED}[event_type]
    data = {"username": author, "url": url, "title": title}
    if created is not None:
        data |= {"link_created_at": format_timestamp(created), "link_updated_at": format_timestamp(updated or created)}
    return Event(subject=subject, event_type=event_type, author=author, occurred_at=occurred, data=data)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A Redis of this module's own: the rebuild's marker and lock are one per store."""
    with serving(RedisServer(tmp_path_factory.mktemp("rebuild-redis"))) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield InMemoryFeedStore()
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_server").url, decode_responses=True)
    client.flushall()
    yield RedisFeedStore(client)
    client.close()


@pytest.fixture
def owners() -> Owners:
    return Owners()


@pytest.fixture
def news(store) -> NewsService:
    return NewsService(store, feed_max_length=FEED_LENGTH, authored_history=50)


def rebuild(store, owners, owner: str = "test") -> StoreRebuild:
    assert store.acquire_rebuild_lock(owner, 60_000)
    try:
        return StoreRebuild(store, owners, owners, feed_max_length=FEED_LENGTH, authored_history=50).run(
            owner, lambda: None)
    finally:
        store.release_rebuild_lock(owner)


def feed(news: NewsService, user: str) -> list[tuple[str, str, str]]:
    items, _ = news.get_news(user, "", 100)
    return [(item.event_type, item.url, item.title) for item in items]


def all_items(news: NewsService, user: str) -> list:
    items, token = news.get_news(user, "", 100)
    while token:
        page, token = news.get_news(user, token, 100)
        items += page
    return items


def feed_ids(news: NewsService, user: str) -> list[str]:
    return [item.event_id for item in news.get_news(user, "", 100)[0]]


def test_a_rebuild_refills_the_projection_and_the_feeds_as_fan_out_would_have(store, owners, news):
    owners.follow("early", "ann", at(0))
    owners.follow("late", "ann", at(2))
    owners.follow("early", "bob", at(0))
    owners.save("ann", "https://ann/1", "one", at(1))
    owners.save("ann", "https://ann/2", "two (edited)", at(3), updated=at(5))
    owners.save("bob", "https://bob/1", "bob one", at(4))
    owners.save("nobody-follows", "https://x/1", "x", at(4))
    assert store.generation() is None

    result = rebuild(store, owners)

    assert (result.follows, result.authors, result.items) == (3, 2, 3)
    assert store.generation() == result.generation
    # One item per link, its last change: a link updated since shows as updated, with its title now.
    assert feed(news, "early") == [("link_updated", "https://ann/2", "two (edited)"),
                                   ("link_added", "https://bob/1", "bob one"), ("link_added", "https://ann/1", "one")]
    # `late` followed ann after her first link: as with fan-out, they never see it.
    assert feed(news, "late") == [("link_updated", "https://ann/2", "two (edited)")]
    assert feed(news, "ann") == [] and feed(news, "nobody-follows") == []
    # The projection is back: a new link reaches the followers (the lost-store bug: it reached no one).
    assert on_link_event(news, link_event("ann", "https://ann/3", "three", at(10), created=at(10))) == 2
    assert feed(news, "late")[0] == ("link_added", "https://ann/3", "three")


def test_each_feed_gets_the_newest_items_of_everyone_followed(store, owners, news):
    for author in ("ann", "bob"):
        owners.follow("reader", author, at(0))
        for index in range(FEED_LENGTH + 2):
            second = index * 2 + (1 if author == "bob" else 0) + 1
            owners.save(author, f"https://{author}/{index}", f"{author} {index}", at(second))
    rebuild(store, owners)
    assert [url for _, url, _ in feed(news, "reader")] == ["https://bob/5", "https://ann/5", "https://bob/4",
                                                           "https://ann/4"]


def test_a_rebuild_is_idempotent(store, owners, news):
    owners.follow("reader", "ann", at(0))
    for index in range(3):
        owners.save("ann", f"https://ann/{index}", "t", at(index + 1))
    first = rebuild(store, owners)
    before = (feed(news, "reader"), feed_ids(news, "reader"), store.follow_windows("ann"))
    second = rebuild(store, owners)
    assert (feed(news, "reader"), feed_ids(news, "reader"), store.follow_windows("ann")) == before
    assert store.generation() == second.generation != first.generation


def test_an_event_consumed_before_the_rebuild_keeps_its_item(store, owners, news):
    owners.follow("reader", "ann", at(0))
    news.apply_follow("reader", "ann", to_millis(at(0)))
    added = link_event("ann", "https://ann/1", "one", at(1.004), created=at(1))  # stamped 4 ms after the change
    on_link_event(news, added)
    owners.save("ann", "https://ann/1", "one", at(1))
    rebuild(store, owners)
    assert feed(news, "reader") == [("link_added", "https://ann/1", "one")]
    assert feed_ids(news, "reader") == [added.event_id]


def test_an_event_of_an_older_publisher_without_the_link_times_is_recognised_too(store, owners, news):
    owners.follow("reader", "ann", at(0))
    news.apply_follow("reader", "ann", to_millis(at(0)))
    on_link_event(news, link_event("ann", "https://ann/1", "one", at(1.2)))  # no link_created_at
    owners.save("ann", "https://ann/1", "one", at(1))
    rebuild(store, owners)
    assert feed(news, "reader") == [("link_added", "https://ann/1", "one")]


def test_an_event_consumed_after_the_rebuild_takes_the_rebuilt_items_place(store, owners, news):
    owners.follow("reader", "ann", at(0))
    owners.save("ann", "https://ann/1", "one", at(1))
    rebuild(store, owners)
    rebuilt_id = feed_ids(news, "reader")
    added = link_event("ann", "https://ann/1", "one", at(1.004), created=at(1))
    on_link_event(news, added)
    on_link_event(news, added)  # and redelivered
    assert feed(news, "reader") == [("link_added", "https://ann/1", "one")]
    assert feed_ids(news, "reader") == [added.event_id] != rebuilt_id
    # The author's history (what a late follow event is given) holds it once too.
    news.apply_follow("newcomer", "ann", to_millis(at(0.5)))
    assert feed_ids(news, "newcomer") == [added.event_id]


def test_events_of_an_updated_link_end_as_fan_out_would_have_left_them(store, owners, news):
    owners.follow("reader", "ann", at(0))
    owners.save("ann", "https://ann/1", "second title", at(1), updated=at(2))
    rebuild(store, owners)
    assert feed(news, "reader") == [("link_updated", "https://ann/1", "second title")]
    # The consumer was behind: both events of the link arrive after the rebuild.
    on_link_event(news, link_event("ann", "https://ann/1", "first title", at(1.01), created=at(1)))
    updated = link_event("ann", "https://ann/1", "second title", at(2.01), "link_updated", created=at(1),
                         updated=at(2))
    on_link_event(news, updated)
    assert feed(news, "reader") == [("link_updated", "https://ann/1", "second title"),
                                    ("link_added", "https://ann/1", "first title")]
    assert feed_ids(news, "reader")[0] == updated.event_id
    rebuild(store, owners)  # and again: nothing changes
    assert len(feed(news, "reader")) == 2


def test_an_unfollow_consumed_during_the_rebuild_wins_over_the_edge_it_read(store, owners, news):
    owners.follow("reader", "ann", at(0))
    owners.follow("other", "ann", at(0))
    owners.save("ann", "https://ann/1", "one", at(1))
    unfollow = Event(subject=UNFOLLOWED, event_type="unfollowed", author="reader", occurred_at=at(5),
                     data={"follower": "reader", "followed": "ann"})
    # Consumed after the rebuild read the edges (social-graph still had the edge), before it wrote the feeds.
    owners.during_link_reads = lambda: on_unfollow(news, unfollow)
    rebuild(store, owners)
    assert on_link_event(news, link_event("ann", "https://ann/2", "two", at(6), created=at(6))) == 1
    assert [url for _, url, _ in feed(news, "reader")] == ["https://ann/1"]
    assert [url for _, url, _ in feed(news, "other")] == ["https://ann/2", "https://ann/1"]


def test_events_arriving_during_a_rebuild_are_neither_lost_nor_duplicated(store, owners, news):
    authors, readers = ["ann", "bob", "cyd"], ["r1", "r2", "r3", "r4"]
    big = NewsService(store, feed_max_length=1000, authored_history=1000)
    events: list[Event] = []
    for author in authors:
        for reader in readers:
            owners.follow(reader, author, at(0))
            big.apply_follow(reader, author, to_millis(at(0)))
        for index in range(40):
            created = at(1 + index + authors.index(author) / 10)
            owners.save(author, f"https://{author}/{index}", f"{author} {index}", created)
            events.append(link_event(author, f"https://{author}/{index}", f"{author} {index}",
                                     created + timedelta(milliseconds=3), created=created))
    random.Random(11).shuffle(events)
    # Some events were consumed before the store was emptied and are lost; the rest are in flight.
    in_flight = events[: len(events) // 2]
    new_ones = [link_event("ann", f"https://ann/new-{index}", "new", at(100 + index), created=at(100 + index))
                for index in range(10)]

    def consume() -> None:
        for event in in_flight + new_ones:
            on_link_event(big, event)
            time.sleep(0)

    def rebuild_all() -> None:
        assert store.acquire_rebuild_lock("concurrent", 60_000)
        StoreRebuild(store, owners, owners, feed_max_length=1000, authored_history=1000).run("concurrent", lambda: None)

    owners.page_size = 1
    assert raised_together([consume, rebuild_all]) == []
    consumed = {event.event_id for event in in_flight + new_ones}
    for reader in readers:
        items = all_items(big, reader)
        changes = Counter((item.event_type, item.url) for item in items)
        assert len(changes) == 130 and set(changes.values()) == {1}, reader
        # Whatever the interleaving, a change whose event was consumed shows as that event's item.
        assert consumed <= {item.event_id for item in items}, reader


def test_the_marker_is_written_only_by_the_holder_of_the_lock(store, owners):
    assert store.acquire_rebuild_lock("a", 60_000)
    assert not store.acquire_rebuild_lock("b", 60_000)
    assert not store.renew_rebuild_lock("b", 60_000) and store.renew_rebuild_lock("a", 60_000)
    assert not store.mark_complete("g-b", "b") and store.generation() is None
    store.release_rebuild_lock("b")  # not theirs: nothing happens
    assert not store.acquire_rebuild_lock("b", 60_000)
    assert store.mark_complete("g-a", "a") and store.generation() == "g-a"
    store.release_rebuild_lock("a")
    assert store.acquire_rebuild_lock("b", 50)
    time.sleep(0.12)  # expired: the holder died
    assert not store.renew_rebuild_lock("b", 60_000)
    assert store.acquire_rebuild_lock("c", 60_000)


def test_a_rebuild_that_loses_its_lock_does_not_mark_the_store_complete(store, owners):
    owners.follow("reader", "ann", at(0))
    owners.save("ann", "https://ann/1", "one", at(1))
    assert store.acquire_rebuild_lock("me", 60_000)
    store.release_rebuild_lock("me")  # as if the store had been emptied (or the lock expired) meanwhile
    with pytest.raises(RebuildAborted):
        StoreRebuild(store, owners, owners, feed_max_length=FEED_LENGTH).run("me", lambda: None)
    assert store.generation() is None


# --- the guard ---------------------------------------------------------------------------------------------
def guard_of(store, owners, interval_s: float = 60.0) -> StoreGuard:
    return StoreGuard("news", store, StoreRebuild(store, owners, owners, feed_max_length=FEED_LENGTH),
                      interval_s=interval_s, lock_ttl_s=3.0)


def completed(trigger: str) -> float:
    return PROJECTION_REBUILDS.labels("news", trigger, "completed")._value.get()


def test_the_guard_rebuilds_only_a_store_without_its_marker(store, owners, news):
    owners.follow("reader", "ann", at(0))
    owners.save("ann", "https://ann/1", "one", at(1))
    guard = guard_of(store, owners)
    before = completed("periodic")
    assert guard.ensure_complete("periodic") is not None
    assert completed("periodic") == before + 1 and owners.follow_walks == 1
    assert guard.ensure_complete("periodic") is None and owners.follow_walks == 1  # complete: nothing read
    assert guard.readiness() == {"generation": store.generation()}
    assert feed(news, "reader") == [("link_added", "https://ann/1", "one")]


def test_replicas_seeing_the_marker_missing_at_once_rebuild_once(store, owners):
    owners.follow("reader", "ann", at(0))
    owners.save("ann", "https://ann/1", "one", at(1))
    owners.during_reads = lambda: time.sleep(0.05)  # a rebuild that takes a while
    guards = [guard_of(store, owners) for _ in range(4)]
    results = []
    assert raised_together([lambda guard=guard: results.append(guard.ensure_complete("startup"))
                            for guard in guards]) == []
    assert len([result for result in results if result is not None]) == 1
    assert owners.follow_walks == 1 and store.generation() is not None


def test_a_stopping_guard_abandons_its_rebuild_and_frees_the_lock(store, owners):
    owners.follow("reader", "ann", at(0))
    owners.save("ann", "https://ann/1", "one", at(1))
    guard = guard_of(store, owners)
    owners.during_reads = lambda: guard.stop(timeout=0)
    aborted = PROJECTION_REBUILDS.labels("news", "command", "aborted")._value.get()
    with pytest.raises(RebuildStopped) as stopped:
        guard.rebuild("command")
    assert isinstance(stopped.value.__cause__, RebuildAborted)
    assert PROJECTION_REBUILDS.labels("news", "command", "aborted")._value.get() == aborted + 1
    assert store.generation() is None and store.acquire_rebuild_lock("next", 1000)


def test_the_running_guard_notices_an_emptied_store_and_rebuilds_it(redis_server, owners):
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    store = RedisFeedStore(client)
    news = NewsService(store, feed_max_length=FEED_LENGTH)
    owners.follow("reader", "ann", at(0))
    owners.save("ann", "https://ann/1", "one", at(1))
    guard = guard_of(store, owners, interval_s=3600)  # only start-up and noticing, no periodic check
    guard.start()
    try:
        assert wait_until(lambda: store.generation() is not None, timeout=10)
        assert feed(news, "reader") == [("link_added", "https://ann/1", "one")]
        client.flushall()  # Redis lost its data
        with pytest.raises(RuntimeError, match="generation marker"):
            guard.readiness()  # reported (the service is degraded, still ready) and the guard woken
        assert wait_until(lambda: feed(news, "reader"), timeout=10)
        assert client.get(GENERATION_KEY) and client.get(REBUILD_LOCK_KEY) is None
        client.flushall()
        time.sleep(1.1)
        guard.notice()  # what each consumed event calls: a look at the marker, at most once a second
        assert wait_until(lambda: feed(news, "reader"), timeout=10)
        assert guard.is_alive()
    finally:
        guard.stop()
        client.close()
    assert not guard._thread.is_alive()
