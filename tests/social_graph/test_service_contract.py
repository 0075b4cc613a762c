"""The social-graph use cases, run against BOTH repositories: the in-memory one used for fast unit
tests and the PostgreSQL one used in production. One suite keeps them from disagreeing."""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import pytest
from delinkcious.contracts.events import FOLLOWED, UNFOLLOWED, Followed, Unfollowed
from delinkcious.kit.core.clock import utc_now
from delinkcious.kit.core.errors import InvalidInput, NotFound, Unavailable
from delinkcious.kit.observability.context import request_scope
from delinkcious.kit.postgres.db import Database
from delinkcious.social_graph.app import DEFINITION
from delinkcious.social_graph.domain import CannotFollowSelf, Follow
from delinkcious.social_graph.repository import InMemoryFollowRepository, InMemoryUnitOfWork, PostgresUnitOfWork
from delinkcious.social_graph.service import SocialGraphService, UserDirectory, follow_event

from tests.support.backends import Backend, outbox_events, postgres_database_fixture, published_events
from tests.support.services import unique_username
from tests.support.threads import raised_together, run_together


class FakeUserDirectory(UserDirectory):
    """Stands in for the user service (our own port, not a store): who exists, and who was asked."""

    def __init__(self) -> None:
        self.users: set[str] = set()
        self.asked: list[str] = []
        self.down = False
        self._lock = threading.Lock()

    def exists(self, username: str) -> bool:
        with self._lock:
            self.asked.append(username)
        if self.down:
            raise Unavailable("user service is down")
        return username in self.users


@dataclass
class GraphBackend(Backend):
    known: Callable[[str], bool]  # whether the projection of the user service knows a user


postgres_database = postgres_database_fixture(DEFINITION)


@pytest.fixture(params=["memory", "postgres"])
def backend(request) -> GraphBackend:
    if request.param == "memory":
        store = InMemoryFollowRepository()
        uow = InMemoryUnitOfWork(store)
        return GraphBackend("memory", lambda: uow, partial(published_events, uow),
                            known=lambda username: username in store.known)

    database: Database = request.getfixturevalue("postgres_database")

    def known(username: str) -> bool:
        with database.transaction() as cursor:
            cursor.execute("SELECT 1 FROM known_users WHERE username = %s", (username,))
            return cursor.fetchone() is not None

    return GraphBackend("postgres", lambda: PostgresUnitOfWork(database.transaction), partial(outbox_events, database),
                        known=known)


@pytest.fixture
def directory() -> FakeUserDirectory:
    return FakeUserDirectory()


@pytest.fixture
def service(backend: GraphBackend, directory: FakeUserDirectory) -> SocialGraphService:
    return SocialGraphService(backend.unit_of_work, directory)


@pytest.fixture
def user_factory(directory: FakeUserDirectory) -> Callable[[], str]:
    """A new user that the user service knows of (the projection does not, yet)."""

    def make(prefix: str = "u") -> str:
        username = unique_username(prefix)
        directory.users.add(username)
        return username

    return make


def all_pages(service: SocialGraphService, user: str, direction: Any, limit: int = 2) -> list[str]:
    names: list[str] = []
    token = None
    while True:
        page, token = service.list(user, direction, start_token=token, limit=limit)
        names += page
        if token is None:
            return names


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["event_type"] for event in events]


def test_follow_creates_one_edge_and_one_event(service, backend, user_factory):
    ann, bob = user_factory(), user_factory()
    with request_scope("rid-1"):
        edge, created = service.follow(ann, bob)
    assert created and (edge.follower, edge.followed) == (ann, bob) and edge.id is not None
    [event] = backend.events_for(ann)
    assert event["subject"] == FOLLOWED and event["event_type"] == "followed"
    assert (event["author"], event["follower"], event["followed"], event["request_id"]) == (ann, ann, bob, "rid-1")
    assert event["occurred_at"].endswith("Z") and event["event_id"]


def test_following_twice_is_not_an_error_and_changes_nothing(service, backend, user_factory):
    ann, bob = user_factory(), user_factory()
    first, created = service.follow(ann, bob)
    again, created_again = service.follow(ann, bob)
    assert created and not created_again
    assert again == first  # same edge: same id and created_at
    assert all_pages(service, ann, "following") == [bob]
    assert kinds(backend.events_for(ann)) == ["followed"]


def test_following_yourself_is_refused_before_anything_else(service, backend, directory):
    ann = unique_username()
    with pytest.raises(CannotFollowSelf):
        service.follow(ann, ann)
    assert directory.asked == [] and backend.events_for(ann) == [] and not backend.known(ann)


def test_following_an_unknown_user_is_not_found_and_writes_nothing(service, backend, directory, user_factory):
    ann, ghost = user_factory(), unique_username("ghost")
    with pytest.raises(NotFound) as raised:
        service.follow(ann, ghost)
    assert raised.value.status == 404 and raised.value.details == {"field": "followed"}
    assert directory.asked == [ghost]
    assert not backend.known(ghost) and backend.events_for(ann) == []
    assert all_pages(service, ann, "following") == []


def test_a_user_confirmed_by_the_user_service_is_remembered(service, backend, directory, user_factory):
    ann, bob, bob_fan = user_factory(), user_factory(), user_factory()
    service.follow(ann, bob)
    assert directory.asked == [bob] and backend.known(bob)
    service.follow(bob_fan, bob)
    assert directory.asked == [bob]  # the projection answered


def test_users_from_user_created_events_need_no_user_service_call(service, backend, directory):
    ann, carol = unique_username(), unique_username()
    assert service.record_user_created("evt-" + carol, carol, utc_now()) is True
    assert service.record_user_created("evt-" + carol, carol, utc_now()) is False  # a redelivery
    assert backend.known(carol)
    assert service.follow(ann, carol)[1] is True
    assert directory.asked == []


def test_the_same_user_in_two_events_is_harmless(service, backend):
    dave = unique_username()
    assert service.record_user_created("evt-a-" + dave, dave, utc_now()) is True
    assert service.record_user_created("evt-b-" + dave, dave, utc_now()) is True
    assert backend.known(dave)


def test_user_service_unavailable_propagates_and_writes_nothing(service, backend, directory, user_factory):
    ann, bob = user_factory(), user_factory()
    directory.down = True
    with pytest.raises(Unavailable):
        service.follow(ann, bob)
    assert not backend.known(bob) and backend.events_for(ann) == []
    directory.down = False
    assert service.follow(ann, bob)[1] is True


def test_unfollow_is_idempotent_and_publishes_only_real_changes(service, backend, user_factory):
    ann, bob = user_factory(), user_factory()
    assert service.unfollow(ann, bob) is False  # nothing to remove: no event
    service.follow(ann, bob)
    assert service.unfollow(ann, bob) is True
    assert service.unfollow(ann, bob) is False
    assert all_pages(service, ann, "following") == [] and all_pages(service, bob, "followers") == []
    events = backend.events_for(ann)
    assert kinds(events) == ["followed", "unfollowed"]
    assert events[1]["subject"] == UNFOLLOWED and (events[1]["follower"], events[1]["followed"]) == (ann, bob)
    assert service.follow(ann, bob)[1] is True  # following again after unfollowing is a new edge
    assert kinds(backend.events_for(ann)) == ["followed", "unfollowed", "followed"]


def test_lists_both_directions_newest_first(service, user_factory):
    ann, bob, carol, dave = (user_factory() for _ in range(4))
    service.follow(ann, bob)
    service.follow(ann, carol)
    service.follow(dave, bob)
    service.follow(carol, bob)
    assert all_pages(service, ann, "following") == [carol, bob]
    assert all_pages(service, bob, "followers") == [carol, dave, ann]
    assert all_pages(service, bob, "following") == [] and all_pages(service, ann, "followers") == []
    assert all_pages(service, unique_username(), "followers") == []  # nobody: an empty list, not a 404


def test_pages_and_their_tokens(service, user_factory):
    ann = user_factory()
    followed = [user_factory() for _ in range(5)]
    for name in followed:
        service.follow(ann, name)
    assert all_pages(service, ann, "following", limit=2) == list(reversed(followed))
    page, token = service.list(ann, "following", start_token=None, limit=5)
    assert len(page) == 5 and token is None  # an exactly full last page has no next page
    page, token = service.list(ann, "following", start_token=None, limit=2)
    assert token is not None
    for direction, user in (("followers", ann), ("following", followed[0])):
        with pytest.raises(InvalidInput) as raised:
            service.list(user, direction, start_token=token, limit=2)
        assert raised.value.field == "start_token"


def test_pages_are_stable_while_follows_are_added(service, user_factory):
    star = user_factory()
    fans = [user_factory() for _ in range(9)]
    for fan in fans:
        service.follow(fan, star)
    seen: list[str] = []
    token = None
    while True:
        page, token = service.list(star, "followers", start_token=token, limit=2)
        seen += page
        if token is None:
            break
        service.follow(user_factory(), star)  # a new follower between every two pages
    assert [name for name in seen if name in fans] == list(reversed(fans))
    assert len(seen) == len(set(seen))


def test_fifty_concurrent_follows_of_one_pair_leave_one_edge_and_one_event(service, backend, user_factory):
    ann, bob = user_factory(), user_factory()
    outcomes: list[bool] = []
    start = threading.Barrier(50)

    def follow() -> None:
        start.wait()
        outcomes.append(service.follow(ann, bob)[1])

    assert raised_together([follow] * 50) == []
    assert outcomes.count(True) == 1 and outcomes.count(False) == 49
    assert all_pages(service, ann, "following", limit=100) == [bob]
    assert kinds(backend.events_for(ann)) == ["followed"]


def test_racing_follows_and_unfollows_publish_alternating_events(service, backend, user_factory):
    """Whatever the interleaving, the events of one pair alternate and end in the final state, so a
    consumer replaying them in order reaches the truth."""
    ann, bob = user_factory(), user_factory()
    service.follow(ann, bob)  # known from here on: the race is about the edge alone
    rng = random.Random(7)
    actions = [rng.choice((service.follow, service.unfollow)) for _ in range(40)]
    run_together([partial(action, ann, bob) for action in actions])
    events = kinds(backend.events_for(ann))
    assert all(a != b for a, b in zip(events, events[1:])), events
    following = all_pages(service, ann, "following") == [bob]
    assert events[-1] == ("followed" if following else "unfollowed")


def test_failed_unit_of_work_leaves_nothing_behind(service, backend, user_factory):
    ann, bob, carol = user_factory(), user_factory(), user_factory()
    service.follow(ann, bob)
    with pytest.raises(RuntimeError):
        with backend.unit_of_work() as uow:
            removed = uow.follows.remove(ann, bob)
            uow.publish(follow_event(Unfollowed, removed, utc_now()))
            added = uow.follows.add(Follow(follower=ann, followed=carol, created_at=utc_now()))
            uow.publish(follow_event(Followed, added, utc_now()))
            uow.known_users.record(carol, utc_now())
            raise RuntimeError("crash before commit")
    assert all_pages(service, ann, "following") == [bob]
    assert kinds(backend.events_for(ann)) == ["followed"]
    assert not backend.known(carol)


def walk_all(service: SocialGraphService, limit: int) -> list[Follow]:
    edges: list[Follow] = []
    token = None
    while True:
        page, token = service.all_follows(start_token=token, limit=limit)
        assert len(page) <= limit
        edges += page
        if token is None:
            return edges


def test_the_walk_over_every_edge_returns_each_once_oldest_first(service, user_factory):
    ann, bob, cat = user_factory(), user_factory(), user_factory()
    ours = [(ann, bob), (bob, ann), (cat, ann), (ann, cat), (cat, bob)]
    for follower, followed in ours:
        service.follow(follower, followed)
    service.unfollow(cat, ann)
    for limit in (1, 2, 3, 1000):
        edges = walk_all(service, limit)
        ids = [edge.id for edge in edges]
        assert ids == sorted(ids) and len(ids) == len(set(ids)), limit  # the backend may hold other tests' edges
        mine = [(edge.follower, edge.followed) for edge in edges if {edge.follower, edge.followed} <= {ann, bob, cat}]
        assert mine == [(ann, bob), (bob, ann), (ann, cat), (cat, bob)], limit
        assert all(edge.created_at.tzinfo is not None for edge in edges)


def test_the_walk_finds_edges_added_while_it_runs_at_its_end(service, user_factory):
    ann, bob, cat = user_factory(), user_factory(), user_factory()
    service.follow(ann, bob)
    service.follow(bob, ann)
    first, token = service.all_follows(start_token=None, limit=1)
    assert token is not None
    seen = list(first)
    service.follow(cat, ann)  # after the walk began: newer than every position, so still ahead of it
    while token is not None:
        page, token = service.all_follows(start_token=token, limit=1)
        seen += page
    pairs = [(edge.follower, edge.followed) for edge in seen]
    assert pairs.count((ann, bob)) == pairs.count((bob, ann)) == 1 and pairs[-1] == (cat, ann)


@pytest.mark.parametrize("token", ["garbage", "e30", "eyJhIjogMCwgImYiOiAiIn0"])
def test_a_bad_walk_token_is_invalid_input(service, token):
    with pytest.raises(InvalidInput) as raised:
        service.all_follows(start_token=token, limit=10)
    assert raised.value.field == "start_token"


def test_a_token_of_another_listing_does_not_continue_the_walk(service, user_factory):
    ann = user_factory()
    for _ in range(3):
        service.follow(ann, user_factory())
    _, list_token = service.list(ann, "following", start_token=None, limit=1)
    with pytest.raises(InvalidInput, match="another listing"):
        service.all_follows(start_token=list_token, limit=10)
    _, walk_token = service.all_follows(start_token=None, limit=1)
    with pytest.raises(InvalidInput, match="another listing"):
        service.list(ann, "following", start_token=walk_token, limit=1)
