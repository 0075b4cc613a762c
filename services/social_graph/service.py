"""Use cases of the social-graph service. Each write runs in one unit of work: the edge and the event
it produces commit together (the Postgres unit of work writes events to the outbox)."""
from __future__ import annotations

import abc
from collections.abc import Callable
from datetime import datetime

from ..contracts.events import Event, Followed, FollowEvent, Unfollowed
from ..kit.core.clock import utc_now
from ..kit.core.errors import NotFound, Unavailable
from ..kit.core.pages import PageTokens
from ..kit.core.unit_of_work import UnitOfWork as KitUnitOfWork
from .domain import Direction, Follow, check_can_follow

# The durable JetStream consumer of user-created events and its idempotency claims share this name.
KNOWN_USERS_CONSUMER = "social-graph-known-users"
_MAX_ADD_ATTEMPTS = 5
# What a page token of the walk over every edge is bound to (no other listing accepts it).
ALL_FOLLOWS_LISTING = ["all-follows"]


# --- ports ------------------------------------------------------------------------------------
class FollowRepository(abc.ABC):
    """Storage of follow edges. Implementations: PostgresFollowRepository and InMemoryFollowRepository,
    held to the same behaviour by one contract test suite."""

    @abc.abstractmethod
    def add(self, follow: Follow) -> Follow | None:
        """Insert the edge unless it exists; the stored edge (with its id), or None if it existed.
        Of concurrent adds of one pair, exactly one gets the edge back."""

    @abc.abstractmethod
    def get(self, follower: str, followed: str) -> Follow | None: ...

    @abc.abstractmethod
    def remove(self, follower: str, followed: str) -> Follow | None:
        """Delete the edge; the deleted edge, or None if there was none."""

    @abc.abstractmethod
    def list(self, username: str, direction: Direction, after_id: int | None, limit: int) -> list[Follow]:
        """Edges from `username` ("following") or to it ("followers"), newest first (descending id),
        only those with id < after_id when given."""

    @abc.abstractmethod
    def walk(self, after_id: int | None, limit: int) -> list[Follow]:
        """Every user's edges, oldest first (ascending id), only those with id > after_id when given."""


class KnownUsers(abc.ABC):
    """The local projection of the users that exist (fed by user-created events)."""

    @abc.abstractmethod
    def contains(self, username: str) -> bool: ...

    @abc.abstractmethod
    def record(self, username: str, known_since: datetime) -> None:
        """Remember that `username` exists; recording a known user again changes nothing."""


class UserDirectory(abc.ABC):
    """The user service, asked when the projection does not know a user yet."""

    @abc.abstractmethod
    def exists(self, username: str) -> bool:
        """Raises kit.errors.Unavailable when the user service cannot answer."""


class UnitOfWork(KitUnitOfWork):
    follows: FollowRepository
    known_users: KnownUsers



# --- use cases --------------------------------------------------------------------------------
class SocialGraphService:
    """`page_tokens` makes and reads the listings' page tokens, bound to their user and listing; the service's
    wiring gives it tokens signed with its PAGE_TOKEN_SECRET (app.py), unsigned ones are for tests of the use cases
    alone."""

    def __init__(self, unit_of_work: Callable[[], UnitOfWork], users: UserDirectory, *,
                 clock: Callable[[], datetime] = utc_now, page_tokens: PageTokens | None = None) -> None:
        self._uow = unit_of_work
        self._users = users
        self._now = clock
        self._tokens = page_tokens or PageTokens()

    def follow(self, follower: str, followed: str) -> tuple[Follow, bool]:
        """Make `follower` follow `followed`; the edge and whether it is new. Following twice is not an
        error: the second time changes nothing and publishes nothing."""
        check_can_follow(follower, followed)
        with self._uow() as uow:
            if uow.known_users.contains(followed):  # the common case: one transaction, no remote call
                return self._add_edge(uow, follower, followed)
        # Not (yet) in the projection, e.g. the user-created event is still on its way: ask the user
        # service, outside any transaction, and remember the answer.
        if not self._users.exists(followed):
            raise NotFound(f"followed: no user named {followed}", details={"field": "followed"})
        with self._uow() as uow:
            uow.known_users.record(followed, self._now())
            return self._add_edge(uow, follower, followed)

    def _add_edge(self, uow: UnitOfWork, follower: str, followed: str) -> tuple[Follow, bool]:
        for _attempt in range(_MAX_ADD_ATTEMPTS):
            added = uow.follows.add(Follow(follower=follower, followed=followed, created_at=self._now()))
            if added is not None:
                uow.publish(follow_event(Followed, added, added.created_at))
                return added, True
            existing = uow.follows.get(follower, followed)
            if existing is not None:
                return existing, False
            # The edge that blocked the insert was deleted since by a concurrent unfollow: try again.
        raise Unavailable("followed: the edge keeps changing concurrently; retry", retry_after=1)

    def unfollow(self, follower: str, followed: str) -> bool:
        """Remove the edge; False (and no event) when there was none."""
        with self._uow() as uow:
            removed = uow.follows.remove(follower, followed)
            if removed is not None:
                uow.publish(follow_event(Unfollowed, removed, self._now()))
        return removed is not None

    def list(self, username: str, direction: Direction, *, start_token: str | None,
             limit: int) -> tuple[list[str], str | None]:
        """One page of usernames, newest edge first, and the token of the next page (None at the end)."""
        listing = [direction, username]
        after_id = self._tokens.decode_id(start_token, listing)
        with self._uow() as uow:
            rows = uow.follows.list(username, direction, after_id, limit + 1)
        page = rows[:limit]
        next_token = (self._tokens.encode_id(page[-1].id, listing)  # type: ignore[arg-type]
                      if len(rows) > limit else None)
        other_side = "followed" if direction == "following" else "follower"
        return [getattr(edge, other_side) for edge in page], next_token

    def all_follows(self, *, start_token: str | None, limit: int) -> tuple[list[Follow], str | None]:
        """One page of every edge, oldest first, and the token of the next page (None at the end): what a
        service keeping a projection of the graph (news) rebuilds it from. Walking every page returns each
        edge that existed when the walk began exactly once (if it still exists when its page is read)."""
        after_id = self._tokens.decode_id(start_token, ALL_FOLLOWS_LISTING)
        with self._uow() as uow:
            rows = uow.follows.walk(after_id, limit + 1)
        page = rows[:limit]
        if len(rows) <= limit:
            return page, None
        return page, self._tokens.encode_id(page[-1].id, ALL_FOLLOWS_LISTING)  # type: ignore[arg-type]

    def record_user_created(self, event_id: str, username: str, occurred_at: datetime) -> bool:
        """Add a user from a user-created event to the projection once; False when it was a redelivery."""
        with self._uow() as uow:
            if not uow.claim_event(KNOWN_USERS_CONSUMER, event_id):
                return False
            uow.known_users.record(username, occurred_at)
        return True


def follow_event(contract: type[FollowEvent], follow: Follow, occurred_at: datetime) -> Event:
    return contract(follower=follow.follower, followed=follow.followed).to_event(author=follow.follower,
                                                                             occurred_at=occurred_at)
