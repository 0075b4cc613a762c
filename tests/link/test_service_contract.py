"""The link use cases, run against BOTH repositories: the in-memory one used for fast unit tests and
the PostgreSQL one used in production. One suite keeps them from disagreeing."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import psycopg2.errors
import pytest
from delinkcious.kit.core.errors import InvalidInput, NotFound, Unavailable
from delinkcious.kit.postgres.db import Database, build_dsn
from delinkcious.link.app import DEFINITION
from delinkcious.link.domain import (
    CheckResult,
    DuplicateLink,
    InconclusiveCheck,
    InconclusiveResult,
    LinkChanges,
    LinkFilter,
    NewLink,
    QuotaExceeded,
)
from delinkcious.link.repository import (
    InMemoryLinkRepository,
    InMemoryUnitOfWork,
    PostgresLinkRepository,
    PostgresUnitOfWork,
)
from delinkcious.link.service import LinkService

from tests.support.backends import Backend, outbox_events, postgres_database_fixture, published_events
from tests.support.services import unique_username
from tests.support.threads import run_together

postgres_database = postgres_database_fixture(DEFINITION)


@pytest.fixture(params=["memory", "postgres"])
def backend(request) -> Backend:
    if request.param == "memory":
        uow = InMemoryUnitOfWork(InMemoryLinkRepository())
        return Backend("memory", lambda: uow, partial(published_events, uow))
    database: Database = request.getfixturevalue("postgres_database")
    return Backend("postgres", lambda: PostgresUnitOfWork(database.transaction), partial(outbox_events, database))


@pytest.fixture
def service(backend: Backend) -> LinkService:
    return LinkService(backend.unit_of_work, max_links_per_user=5)


@pytest.fixture
def user() -> str:
    return unique_username()


def new(url: str, title: str = "Title", **extra: Any) -> NewLink:
    return NewLink.parse({"url": url, "title": title, **extra})


def all_pages(service: LinkService, user: str, link_filter: LinkFilter = LinkFilter(), limit: int = 2) -> list[str]:
    urls: list[str] = []
    token = None
    while True:
        links, token = service.list_links(user, link_filter, start_token=token, limit=limit)
        urls += [link.url for link in links]
        if token is None:
            return urls


def test_add_then_list_newest_first(service, user, backend):
    service.add_link(user, new("https://a.example/1", tags=["Py", "py", "web"]))
    added = service.add_link(user, new("https://a.example/2", description="two"))
    assert added.status == "pending" and added.description == "two"
    links, token = service.list_links(user, LinkFilter(), start_token=None, limit=10)
    assert [link.url for link in links] == ["https://a.example/2", "https://a.example/1"]
    assert links[1].tags == ("py", "web")
    assert token is None
    assert [event["event_type"] for event in backend.events_for(user)] == ["link_added", "link_added"]


def test_users_do_not_see_each_other(service, user):
    other = unique_username()
    service.add_link(user, new("https://a.example/mine"))
    service.add_link(other, new("https://a.example/theirs"))
    assert all_pages(service, user) == ["https://a.example/mine"]


def test_duplicate_after_normalisation_carries_the_existing_link(service, user, backend):
    original = service.add_link(user, new("https://Example.com:443/page/"))
    with pytest.raises(DuplicateLink) as raised:
        service.add_link(user, new("https://example.com/page", title="other"))
    assert raised.value.existing.url == original.url and raised.value.existing.title == "Title"
    assert raised.value.status == 409 and raised.value.code == "duplicate_link"
    assert len(backend.events_for(user)) == 1  # the refused write published nothing


def test_same_url_for_two_users_is_fine(service, user):
    service.add_link(user, new("https://example.com/shared"))
    service.add_link(unique_username(), new("https://example.com/shared"))


def test_quota(service, user, backend):
    for index in range(5):
        service.add_link(user, new(f"https://q.example/{index}"))
    with pytest.raises(QuotaExceeded) as raised:
        service.add_link(user, new("https://q.example/6"))
    assert raised.value.code == "quota_exceeded" and raised.value.status == 409
    assert len(backend.events_for(user)) == 5
    service.delete_link(user, "https://q.example/0")
    service.add_link(user, new("https://q.example/6"))


def test_concurrent_adds_respect_the_quota(service, user):
    outcomes: list[str] = []

    def add(index: int) -> None:
        try:
            service.add_link(user, new(f"https://race.example/{index}"))
            outcomes.append("added")
        except QuotaExceeded:
            outcomes.append("quota")

    run_together([partial(add, index) for index in range(12)])
    assert outcomes.count("added") == 5 and outcomes.count("quota") == 7
    assert len(all_pages(service, user, limit=100)) == 5


def test_update(service, user, backend):
    service.add_link(user, new("https://u.example/x", tags=["a", "b"]))
    updated = service.update_link(user, LinkChanges.parse(
        {"url": "HTTPS://u.example/x/", "title": "New", "add_tags": ["C"], "remove_tags": ["a"]}))
    assert (updated.title, updated.tags) == ("New", ("b", "c"))
    assert updated.updated_at >= updated.created_at
    links, _ = service.list_links(user, LinkFilter(), start_token=None, limit=10)
    assert links[0].title == "New" and links[0].tags == ("b", "c")
    events = backend.events_for(user)
    assert [event["event_type"] for event in events] == ["link_added", "link_updated"]
    assert events[1]["title"] == "New" and events[1]["tags"] == ["b", "c"]


def test_update_that_changes_nothing_writes_nothing(service, user, backend):
    service.add_link(user, new("https://u.example/same", title="Same"))
    service.update_link(user, LinkChanges.parse({"url": "https://u.example/same", "title": "Same"}))
    assert len(backend.events_for(user)) == 1


def test_update_and_delete_of_missing_links(service, user, backend):
    with pytest.raises(NotFound):
        service.update_link(user, LinkChanges.parse({"url": "https://missing.example", "title": "x"}))
    with pytest.raises(NotFound):
        service.delete_link(user, "https://missing.example")
    assert backend.events_for(user) == []


def test_delete(service, user, backend):
    service.add_link(user, new("https://d.example/x"))
    deleted = service.delete_link(user, "https://D.example/x/")
    assert deleted.url == "https://d.example/x"
    assert all_pages(service, user) == []
    assert [event["event_type"] for event in backend.events_for(user)] == ["link_added", "link_deleted"]


def test_filters(service, user):
    service.add_link(user, new("https://docs.python.org/3/", title="Python docs", description="reference",
                               tags=["python", "docs"]))
    service.add_link(user, new("https://go.dev/doc", title="Go docs", description="reference", tags=["go", "docs"]))
    service.add_link(user, new("https://news.example/python-3-14", title="News", description="Release notes",
                               tags=["python"]))

    def urls(**kwargs: Any) -> list[str]:
        return all_pages(service, user, LinkFilter(**kwargs), limit=10)

    assert urls(url_regex="python") == ["https://news.example/python-3-14", "https://docs.python.org/3/"]
    assert urls(title_regex="^Go ") == ["https://go.dev/doc"]
    assert urls(description_regex="notes$") == ["https://news.example/python-3-14"]
    assert urls(tags=("docs",)) == ["https://go.dev/doc", "https://docs.python.org/3/"]
    assert urls(tags=("docs", "python")) == ["https://docs.python.org/3/"]
    assert urls(title_regex="docs", url_regex="go") == ["https://go.dev/doc"]
    assert urls(title_regex="nothing matches") == []


@pytest.mark.parametrize("parameter", ["url_regex", "title_regex", "description_regex"])
def test_invalid_regex_names_the_parameter(service, user, parameter):
    with pytest.raises(InvalidInput) as raised:
        service.list_links(user, LinkFilter(**{parameter: "(unclosed"}), start_token=None, limit=10)
    assert raised.value.field == parameter


def test_pagination_filters_and_tokens(service, user):
    for index in range(5):
        service.add_link(user, new(f"https://p.example/{index}", tags=["even" if index % 2 == 0 else "odd"]))
    assert all_pages(service, user, limit=2) == [f"https://p.example/{i}" for i in (4, 3, 2, 1, 0)]
    assert all_pages(service, user, LinkFilter(tags=("even",)), limit=1) == \
        [f"https://p.example/{i}" for i in (4, 2, 0)]
    links, token = service.list_links(user, LinkFilter(), start_token=None, limit=5)
    assert len(links) == 5 and token is None  # an exactly full last page has no next page


def test_check_results_apply_once_and_never_go_back_in_time(service, user):
    service.add_link(user, new("https://c.example/x"))
    checked_at = datetime(2026, 5, 1, tzinfo=timezone.utc)
    result = CheckResult(username=user, url="https://C.example/x/", status="valid", checked_at=checked_at,
                         http_status=200)
    assert service.apply_check_result("evt-1", result) is True
    assert service.apply_check_result("evt-1", result) is False  # redelivery
    stale = CheckResult(username=user, url="https://c.example/x", status="invalid",
                        checked_at=checked_at - timedelta(hours=1), http_status=404)
    service.apply_check_result("evt-0", stale)
    links, _ = service.list_links(user, LinkFilter(), start_token=None, limit=10)
    assert (links[0].status, links[0].http_status, links[0].checked_at) == ("valid", 200, checked_at)
    newer = CheckResult(username=user, url="https://c.example/x", status="invalid",
                        checked_at=checked_at + timedelta(hours=1), http_status=404, reason="not found")
    service.apply_check_result("evt-2", newer)
    links, _ = service.list_links(user, LinkFilter(), start_token=None, limit=10)
    assert (links[0].status, links[0].status_reason) == ("invalid", "not found")


def test_check_result_about_an_earlier_copy_of_a_re_added_link_is_ignored(service, user):
    first = service.add_link(user, new("https://again.example"))
    service.delete_link(user, "https://again.example")
    service.add_link(user, new("https://again.example"))
    late = CheckResult(username=user, url="https://again.example", status="invalid",
                       checked_at=datetime.now(timezone.utc), http_status=404, link_created_at=first.created_at)
    service.apply_check_result("evt-late", late)
    links, _ = service.list_links(user, LinkFilter(), start_token=None, limit=10)
    assert links[0].status == "pending"


def test_check_result_for_a_deleted_link_is_ignored(service, user):
    result = CheckResult(username=user, url="https://gone.example", status="valid",
                         checked_at=datetime.now(timezone.utc))
    assert service.apply_check_result("evt-gone", result) is True
    assert all_pages(service, user) == []


def event_id(name: str) -> str:
    """An event id of this run alone: claims in PostgreSQL outlive a test."""
    return f"{name}-{uuid.uuid4()}"


def attempt(user: str, url: str, attempted_at: datetime, *, attempts: int = 1, given_up: bool = False,
            reason: str = "HTTP 503", failure: str = "http_5xx", http_status: int | None = 503,
            link_created_at: datetime | None = None) -> InconclusiveResult:
    return InconclusiveResult(user, url, InconclusiveCheck(
        attempted_at=attempted_at, reason=reason, failure=failure, attempts=attempts,
        next_attempt_at=None if given_up else attempted_at + timedelta(minutes=attempts), given_up=given_up,
        http_status=http_status), link_created_at=link_created_at)


def the_link(service: LinkService, user: str):
    links, _ = service.list_links(user, LinkFilter(), start_token=None, limit=10)
    assert len(links) == 1
    return links[0]


def test_an_inconclusive_check_is_recorded_and_the_conclusive_status_kept(service, user):
    added = service.add_link(user, new("https://flaky.example/x"))
    assert added.inconclusive_check is None
    checked_at = datetime(2026, 5, 1, tzinfo=timezone.utc)
    service.apply_check_result(event_id("evt-valid"), CheckResult(username=user, url="https://flaky.example/x", status="valid",
                                                         checked_at=checked_at, http_status=200))
    later = attempt(user, "https://FLAKY.example/x/", checked_at + timedelta(hours=1), link_created_at=added.created_at)
    once = event_id("evt-a1")
    assert service.apply_inconclusive_check(once, later) is True
    assert service.apply_inconclusive_check(once, later) is False  # redelivery
    link = the_link(service, user)
    assert (link.status, link.http_status, link.checked_at, link.status_reason) == ("valid", 200, checked_at, None)
    assert link.inconclusive_check == later.check

    # A pending link stays pending; the attempt is recorded as given up.
    service.add_link(user, new("https://flaky.example/pending"))
    gave_up = attempt(user, "https://flaky.example/pending", checked_at, attempts=8, given_up=True,
                      reason="timed out: no answer within 10 s", failure="timeout", http_status=None)
    service.apply_inconclusive_check(event_id("evt-a2"), gave_up)
    links, _ = service.list_links(user, LinkFilter(), start_token=None, limit=10)
    pending = links[0]
    assert pending.status == "pending" and pending.checked_at is None
    assert pending.inconclusive_check == gave_up.check and pending.inconclusive_check.next_attempt_at is None


def test_an_older_attempt_never_overwrites_a_newer_record(service, user):
    service.add_link(user, new("https://order.example"))
    start = datetime(2026, 5, 1, tzinfo=timezone.utc)
    service.apply_check_result(event_id("evt-v"), CheckResult(username=user, url="https://order.example", status="invalid",
                                                     checked_at=start, http_status=404, reason="HTTP 404"))
    newest = attempt(user, "https://order.example", start + timedelta(minutes=10), attempts=2)
    service.apply_inconclusive_check(event_id("evt-a2"), newest)
    service.apply_inconclusive_check(event_id("evt-a1"),
                                     attempt(user, "https://order.example", start + timedelta(minutes=5)))
    assert the_link(service, user).inconclusive_check == newest.check
    # An attempt older than the last conclusive check says nothing new: ignored.
    service.apply_check_result(event_id("evt-v2"), CheckResult(username=user, url="https://order.example", status="valid",
                                                      checked_at=start + timedelta(minutes=20), http_status=200))
    service.apply_inconclusive_check(event_id("evt-a3"), attempt(user, "https://order.example", start + timedelta(minutes=15),
                                                       attempts=3))
    link = the_link(service, user)
    assert link.inconclusive_check is None and link.status == "valid"


def test_a_later_conclusive_check_clears_the_attempt_and_an_earlier_one_leaves_it(service, user):
    service.add_link(user, new("https://later.example"))
    start = datetime(2026, 5, 1, tzinfo=timezone.utc)
    recorded = attempt(user, "https://later.example", start + timedelta(minutes=10))
    service.apply_inconclusive_check(event_id("evt-a"), recorded)
    # A verdict reached before the attempt (delivered late) sets the status, and the attempt stays the latest news.
    service.apply_check_result(event_id("evt-early"), CheckResult(username=user, url="https://later.example", status="valid",
                                                         checked_at=start, http_status=200))
    link = the_link(service, user)
    assert (link.status, link.checked_at, link.inconclusive_check) == ("valid", start, recorded.check)
    # A verdict after it replaces it.
    service.apply_check_result(event_id("evt-late"), CheckResult(
        username=user, url="https://later.example", status="invalid", checked_at=start + timedelta(minutes=11),
        http_status=410, reason="HTTP 410"))
    link = the_link(service, user)
    assert (link.status, link.status_reason, link.inconclusive_check) == ("invalid", "HTTP 410", None)


def test_attempts_about_a_deleted_or_re_added_link_are_ignored(service, user):
    now = datetime.now(timezone.utc)
    assert service.apply_inconclusive_check(event_id("evt-gone"), attempt(user, "https://gone.example", now)) is True
    assert all_pages(service, user) == []
    first = service.add_link(user, new("https://again.example"))
    service.delete_link(user, "https://again.example")
    again = service.add_link(user, new("https://again.example"))
    service.apply_inconclusive_check(event_id("evt-old-copy"), attempt(user, "https://again.example", now + timedelta(seconds=1),
                                                             link_created_at=first.created_at))
    assert the_link(service, user).inconclusive_check is None
    current = attempt(user, "https://again.example", now + timedelta(seconds=2), link_created_at=again.created_at)
    service.apply_inconclusive_check(event_id("evt-this-copy"), current)
    assert the_link(service, user).inconclusive_check == current.check


def test_an_update_keeps_the_attempt_record(service, user):
    service.add_link(user, new("https://kept.example"))
    recorded = attempt(user, "https://kept.example", datetime.now(timezone.utc))
    service.apply_inconclusive_check(event_id("evt-k"), recorded)
    updated = service.update_link(user, LinkChanges.parse({"url": "https://kept.example", "title": "Changed"}))
    assert updated.inconclusive_check == recorded.check
    assert the_link(service, user).inconclusive_check == recorded.check


def test_failed_unit_of_work_leaves_nothing_behind(service, user, backend):
    service.add_link(user, new("https://r.example/kept"))
    with pytest.raises(RuntimeError):
        with backend.unit_of_work() as uow:
            uow.links.lock_user(user)
            existing = uow.links.get(user, "https://r.example/kept")
            uow.links.delete(existing)
            from delinkcious.contracts.events import LinkDeleted
            from delinkcious.link.service import link_event

            uow.publish(link_event(LinkDeleted, existing))
            raise RuntimeError("crash before commit")
    assert all_pages(service, user) == ["https://r.example/kept"]
    assert [event["event_type"] for event in backend.events_for(user)] == ["link_added"]


def test_a_filter_stopped_by_the_statement_timeout_is_the_clients_error(service_environment, user):
    """PostgreSQL's statement_timeout bounds a costly regular expression; that is a 400 naming the
    filter, while the same timeout without any pattern stays a database problem (503)."""
    access = service_environment.database(DEFINITION)
    database = Database(build_dsn(access.dsn, access.read_password()), pool_size=1, statement_timeout_ms=1)
    try:
        with database.transaction() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 0")
            cursor.execute(
                "INSERT INTO links (username, url, url_key, title, created_at, updated_at) "
                "SELECT %s, 'https://bulk.example/' || n, 'https://bulk.example/' || n, 't', now(), now() "
                "FROM generate_series(1, 200000) AS n", (user,))
        with pytest.raises(InvalidInput) as raised:
            with database.transaction() as cursor:
                PostgresLinkRepository(cursor).list(user, LinkFilter(title_regex="^x"), None, 10)
        assert raised.value.field == "title_regex"
        with pytest.raises(Unavailable) as unavailable:
            with database.transaction() as cursor:
                cursor.execute("SELECT count(*) FROM links a, links b WHERE a.username = %s", (user,))
        assert isinstance(unavailable.value.__cause__, psycopg2.errors.QueryCanceled)
    finally:
        with database.transaction() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 0")
            cursor.execute("DELETE FROM links WHERE username = %s", (user,))
        database.close()
