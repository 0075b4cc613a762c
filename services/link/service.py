"""Use cases of the link service. Each runs in one unit of work: the state change and the event it
produces commit together (the Postgres unit of work writes events to the outbox)."""
from __future__ import annotations

import abc
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..contracts.events import Event, LinkAdded, LinkDeleted, LinkEvent, LinkUpdated
from ..kit.core.clock import format_timestamp, parse_timestamp, utc_now
from ..kit.core.errors import InvalidInput, NotFound
from ..kit.core.pages import PageTokens
from ..kit.core.unit_of_work import UnitOfWork as KitUnitOfWork
from .domain import (
    CheckResult,
    DuplicateLink,
    InconclusiveResult,
    Link,
    LinkChanges,
    LinkFilter,
    NewLink,
    Page,
    QuotaExceeded,
    normalise_url,
)

# The durable JetStream consumers and their idempotency claims share these names: one for the checker's verdicts,
# one for its attempts without a verdict (a consumer of its own: an existing durable consumer keeps the subjects it
# was created with, so adding a subject to the first would never reach a deployed one).
CHECK_RESULTS_CONSUMER = "link-service-check-results"
CHECK_ATTEMPTS_CONSUMER = "link-service-check-attempts"


# --- ports ------------------------------------------------------------------------------------
class LinkRepository(abc.ABC):
    """Storage of links. Implementations: PostgresLinkRepository and InMemoryLinkRepository, held to
    the same behaviour by one contract test suite."""

    @abc.abstractmethod
    def lock_user(self, username: str) -> None:
        """Serialise writers of one user's links until the unit of work ends (quota checks)."""

    @abc.abstractmethod
    def count(self, username: str) -> int: ...

    @abc.abstractmethod
    def get(self, username: str, url_key: str) -> Link | None: ...

    @abc.abstractmethod
    def add(self, link: Link) -> Link:
        """Insert; returns the link with its id. The caller has checked for a duplicate under lock_user."""

    @abc.abstractmethod
    def update(self, link: Link) -> None: ...

    @abc.abstractmethod
    def delete(self, link: Link) -> None: ...

    @abc.abstractmethod
    def list(self, username: str, link_filter: LinkFilter, after_id: int | None, limit: int) -> list[Link]:
        """Links newest first (descending id), only those with id < after_id when given."""

    @abc.abstractmethod
    def recently_changed(self, username: str, after: tuple[datetime, int] | None, limit: int) -> list[Link]:
        """The user's links, most recently changed first (descending updated_at, then id), only those
        before `after` (an updated_at and an id) in that order when given."""

    @abc.abstractmethod
    def check_patterns(self, link_filter: LinkFilter) -> None:
        """Raise InvalidInput naming the parameter whose regular expression is invalid."""

    @abc.abstractmethod
    def apply_check(self, result: CheckResult, url_key: str) -> bool:
        """Record a check result unless a newer one is already recorded; False if nothing changed. It sets the
        status, and clears the link's inconclusive check unless that attempt is newer than the result."""

    @abc.abstractmethod
    def apply_inconclusive(self, result: InconclusiveResult, url_key: str) -> bool:
        """Record an attempt without verdict as the link's inconclusive check, leaving the status alone, unless the
        link has a newer conclusive check or a newer attempt; False if nothing changed."""


class UnitOfWork(KitUnitOfWork):
    links: LinkRepository



# --- use cases --------------------------------------------------------------------------------
class LinkService:
    """`page_tokens` makes and reads the listings' page tokens: signed when it has the service's secret
    (PAGE_TOKEN_SECRET), and bound to the user and the listing either way."""

    def __init__(self, unit_of_work: Callable[[], UnitOfWork], *, max_links_per_user: int,
                 clock: Callable[[], datetime] = utc_now, page_tokens: PageTokens | None = None) -> None:
        self._uow = unit_of_work
        self._max_links = max_links_per_user
        self._now = clock
        self._tokens = page_tokens or PageTokens()

    def list_links(self, username: str, link_filter: LinkFilter, *, start_token: str | None,
                   limit: int) -> tuple[list[Link], str | None]:
        # Whose list, and which filters: a token of another user's list, or of other filters, is refused.
        listing = ["links", username, link_filter.fingerprint()]
        after_id = self._tokens.decode_id(start_token, listing)
        with self._uow() as uow:
            uow.links.check_patterns(link_filter)
            rows = uow.links.list(username, link_filter, after_id, limit + 1)
        page = Page(rows[:limit], rows[limit - 1].id if len(rows) > limit else None)
        token = self._tokens.encode_id(page.next_after_id, listing) if page.next_after_id else None
        return page.links, token

    def recently_changed(self, username: str, *, start_token: str | None,
                         limit: int) -> tuple[list[Link], str | None]:
        """One page of the user's links, most recently changed first, and the next page's token (None at the end):
        what a service keeping a projection of links (news' feeds) rebuilds it from."""
        listing = ["recently-changed", username]
        after = _change_position(self._tokens.decode(start_token, listing))
        with self._uow() as uow:
            rows = uow.links.recently_changed(username, after, limit + 1)
        page = rows[:limit]
        if len(rows) <= limit:
            return page, None
        return page, self._tokens.encode([format_timestamp(page[-1].updated_at), page[-1].id], listing)

    def add_link(self, username: str, new: NewLink) -> Link:
        now = self._now()
        url_key = normalise_url(new.url)
        with self._uow() as uow:
            uow.links.lock_user(username)
            existing = uow.links.get(username, url_key)
            if existing is not None:
                raise DuplicateLink(existing)
            if uow.links.count(username) >= self._max_links:
                raise QuotaExceeded(self._max_links)
            link = uow.links.add(Link(
                username=username, url=new.url, url_key=url_key, title=new.title,
                description=new.description, tags=new.tags, created_at=now, updated_at=now,
            ))
            uow.publish(link_event(LinkAdded, link))
        return link

    def update_link(self, username: str, changes: LinkChanges) -> Link:
        url_key = normalise_url(changes.url)
        with self._uow() as uow:
            uow.links.lock_user(username)
            current = uow.links.get(username, url_key)
            if current is None:
                raise NotFound(f"url: no saved link {changes.url}")
            updated = current.with_changes(
                title=changes.title, description=changes.description,
                add_tags=changes.add_tags, remove_tags=changes.remove_tags, now=self._now(),
            )
            if updated is not current:  # an update that changes nothing writes nothing
                uow.links.update(updated)
                uow.publish(link_event(LinkUpdated, updated))
        return updated

    def delete_link(self, username: str, url: str) -> Link:
        url_key = normalise_url(url)
        with self._uow() as uow:
            uow.links.lock_user(username)
            current = uow.links.get(username, url_key)
            if current is None:
                raise NotFound(f"url: no saved link {url}")
            uow.links.delete(current)
            uow.publish(link_event(LinkDeleted, current))
        return current

    def apply_check_result(self, event_id: str, result: CheckResult) -> bool:
        """Apply a link-checked event once; False when it was a redelivery."""
        with self._uow() as uow:
            if not uow.claim_event(CHECK_RESULTS_CONSUMER, event_id):
                return False
            uow.links.apply_check(result, normalise_url(result.url))
        return True

    def apply_inconclusive_check(self, event_id: str, result: InconclusiveResult) -> bool:
        """Apply a link-check-inconclusive event once; False when it was a redelivery."""
        with self._uow() as uow:
            if not uow.claim_event(CHECK_ATTEMPTS_CONSUMER, event_id):
                return False
            uow.links.apply_inconclusive(result, normalise_url(result.url))
        return True


def _change_position(position: Any) -> tuple[datetime, int] | None:
    """A recently-changed page token's position: [updated_at, id] of the last link of the previous page."""
    if position is None:
        return None
    if (isinstance(position, list) and len(position) == 2 and isinstance(position[0], str)
            and isinstance(position[1], int) and not isinstance(position[1], bool) and position[1] >= 1):
        try:
            return parse_timestamp(position[0]), position[1]
        except ValueError:
            pass
    raise InvalidInput("start_token", "is not a valid page token")


def link_event(contract: type[LinkEvent], link: Link) -> Event:
    return contract(
        username=link.username, url=link.url, title=link.title, description=link.description, tags=link.tags,
        link_created_at=link.created_at, link_updated_at=link.updated_at,
    ).to_event(author=link.username)
