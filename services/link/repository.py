"""Link storage adapters: PostgreSQL for real, in memory for fast unit tests of the use cases.
tests/link/test_service_contract.py holds both to the same behaviour."""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from ..kit.core.errors import InvalidInput
from ..kit.core.unit_of_work import InMemoryStore
from ..kit.core.unit_of_work import InMemoryUnitOfWork as KitInMemoryUnitOfWork
from ..kit.postgres.unit_of_work import PostgresUnitOfWork as KitPostgresUnitOfWork
from .domain import CheckResult, FilterTooCostly, InconclusiveCheck, InconclusiveResult, Link, LinkFilter
from .service import LinkRepository, UnitOfWork

# The link's inconclusive check (link_0003_inconclusive_checks.sql): all NULL when it has none.
_ATTEMPT_COLUMNS = ("last_attempt_at", "last_attempt_reason", "last_attempt_failure", "last_attempt_http_status",
                    "last_attempt_count", "next_attempt_at", "last_attempt_given_up")
_COLUMNS = ("id, username, url, url_key, title, description, tags, status, http_status, status_reason, "
            "checked_at, created_at, updated_at, " + ", ".join(_ATTEMPT_COLUMNS))


def _link_from_row(row: dict[str, Any]) -> Link:
    return Link(
        id=row["id"], username=row["username"], url=row["url"], url_key=row["url_key"], title=row["title"],
        description=row["description"], tags=tuple(row["tags"]), status=row["status"],
        http_status=row["http_status"], status_reason=row["status_reason"], checked_at=row["checked_at"],
        created_at=row["created_at"], updated_at=row["updated_at"], inconclusive_check=_attempt_from_row(row),
    )


def _attempt_from_row(row: dict[str, Any]) -> InconclusiveCheck | None:
    if row["last_attempt_at"] is None:
        return None
    return InconclusiveCheck(
        attempted_at=row["last_attempt_at"], reason=row["last_attempt_reason"], failure=row["last_attempt_failure"],
        attempts=row["last_attempt_count"], next_attempt_at=row["next_attempt_at"],
        given_up=row["last_attempt_given_up"], http_status=row["last_attempt_http_status"],
    )


class PostgresLinkRepository(LinkRepository):
    """`filter_timeout_ms`: what the statements of one unit of work with regex filters (compiling the expressions,
    then the listing) may take together. Each runs under `SET LOCAL statement_timeout` set to what is left of it,
    so PostgreSQL cancels whatever outlasts it and the client gets FilterTooCostly. None leaves the connection's
    own statement_timeout in force."""

    def __init__(self, cursor: psycopg2.extensions.cursor, filter_timeout_ms: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cursor = cursor
        self._filter_timeout_ms = filter_timeout_ms
        self._clock = clock
        self._filter_deadline: float | None = None

    def _limit_filter_cost(self, parameters: list[str]) -> None:
        if self._filter_timeout_ms is None:
            return
        now = self._clock()
        if self._filter_deadline is None:
            self._filter_deadline = now + self._filter_timeout_ms / 1000
        remaining_ms = int((self._filter_deadline - now) * 1000)
        if remaining_ms < 1:
            raise FilterTooCostly(parameters, self._filter_timeout_ms)
        self._cursor.execute(f"SET LOCAL statement_timeout = {remaining_ms}")

    def lock_user(self, username: str) -> None:
        # Transaction-scoped advisory lock on the user: concurrent adds cannot both pass the quota.
        self._cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"links:{username}",))

    def count(self, username: str) -> int:
        self._cursor.execute("SELECT count(*) AS n FROM links WHERE username = %s", (username,))
        return int(self._cursor.fetchone()["n"])

    def get(self, username: str, url_key: str) -> Link | None:
        self._cursor.execute(f"SELECT {_COLUMNS} FROM links WHERE username = %s AND url_key = %s",
                             (username, url_key))
        row = self._cursor.fetchone()
        return _link_from_row(row) if row else None

    def add(self, link: Link) -> Link:
        self._cursor.execute(
            "INSERT INTO links (username, url, url_key, title, description, tags, status, created_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (link.username, link.url, link.url_key, link.title, link.description, list(link.tags), link.status,
             link.created_at, link.updated_at),
        )
        return replace(link, id=self._cursor.fetchone()["id"])

    def update(self, link: Link) -> None:
        self._cursor.execute(
            "UPDATE links SET title = %s, description = %s, tags = %s, updated_at = %s WHERE id = %s",
            (link.title, link.description, list(link.tags), link.updated_at, link.id),
        )

    def delete(self, link: Link) -> None:
        self._cursor.execute("DELETE FROM links WHERE id = %s", (link.id,))

    def list(self, username: str, link_filter: LinkFilter, after_id: int | None, limit: int) -> list[Link]:
        # Regular expressions are evaluated by PostgreSQL (POSIX ARE). The page must walk links_user_page_idx
        # (username, id DESC) so that it never reads other users' rows. Given `username = %s`, the planner drops
        # username from the ORDER BY as a constant and may walk links_pkey backwards instead, filtering on
        # username: through every newer row when the user's links are old. With ANY and the index's whole key as
        # the order, only links_user_page_idx yields the order without a sort (tests/link/test_query_plan.py).
        conditions = ["username = ANY(ARRAY[%s])"]
        params: list[Any] = [username]
        if after_id is not None:
            conditions.append("id < %s")
            params.append(after_id)
        for column, pattern in (("url", link_filter.url_regex), ("title", link_filter.title_regex),
                                ("description", link_filter.description_regex)):
            if pattern is not None:
                conditions.append(f"{column} ~ %s")
                params.append(pattern)
        if link_filter.tags:
            conditions.append("tags @> %s::text[]")
            params.append(list(link_filter.tags))
        params.append(limit)
        patterns = link_filter.patterns()
        if patterns:
            self._limit_filter_cost(list(patterns))
        try:
            self._cursor.execute(
                f"SELECT {_COLUMNS} FROM links WHERE {' AND '.join(conditions)} ORDER BY username, id DESC LIMIT %s",
                params,
            )
        except psycopg2.errors.QueryCanceled:
            if not patterns:
                raise  # plain slowness is the database's problem (503), not the client's
            # The statement timeout stopped the regular expressions: the client's input, a 400 that nobody retries
            # (the transaction is rolled back as the error leaves the unit of work).
            raise FilterTooCostly(list(patterns), self._filter_timeout_ms) from None
        return [_link_from_row(row) for row in self._cursor.fetchall()]

    def recently_changed(self, username: str, after: tuple[datetime, int] | None, limit: int) -> list[Link]:
        # The user's rows come from links_user_page_idx and are sorted: at most the quota's worth of rows.
        conditions, params = ["username = %s"], [username]
        if after is not None:
            conditions.append("(updated_at, id) < (%s, %s)")
            params += [after[0], after[1]]
        self._cursor.execute(
            f"SELECT {_COLUMNS} FROM links WHERE {' AND '.join(conditions)} ORDER BY updated_at DESC, id DESC LIMIT %s",
            [*params, limit],
        )
        return [_link_from_row(row) for row in self._cursor.fetchall()]

    def check_patterns(self, link_filter: LinkFilter) -> None:
        # Compiling is where some expressions cost (counted repetitions expand): under the filter budget too.
        for parameter, pattern in link_filter.patterns().items():
            self._limit_filter_cost([parameter])
            try:
                self._cursor.execute("SELECT '' ~ %s", (pattern,))
            except psycopg2.errors.InvalidRegularExpression as exc:
                detail = (exc.diag.message_primary or "invalid regular expression").removeprefix(
                    "invalid regular expression: ")
                raise InvalidInput(parameter, f"invalid regular expression: {detail}") from None
            except psycopg2.errors.QueryCanceled:
                raise FilterTooCostly([parameter], self._filter_timeout_ms) from None

    def apply_check(self, result: CheckResult, url_key: str) -> bool:
        # The inconclusive check goes when this result is as new (InconclusiveCheck.cleared_by). Every expression of
        # a SET sees the row as it was, so each column tests the old last_attempt_at.
        cleared = ", ".join(f"{column} = CASE WHEN last_attempt_at <= %(checked_at)s THEN NULL ELSE {column} END"
                            for column in _ATTEMPT_COLUMNS)
        self._cursor.execute(
            "UPDATE links SET status = %(status)s, http_status = %(http_status)s, status_reason = %(reason)s, "
            f"checked_at = %(checked_at)s, {cleared} "
            "WHERE username = %(username)s AND url_key = %(url_key)s "
            "AND (checked_at IS NULL OR checked_at <= %(checked_at)s) "
            "AND (%(link_created_at)s::timestamptz IS NULL OR created_at = %(link_created_at)s::timestamptz)",
            {"status": result.status, "http_status": result.http_status, "reason": result.reason,
             "checked_at": result.checked_at, "username": result.username, "url_key": url_key,
             "link_created_at": result.link_created_at},
        )
        return self._cursor.rowcount > 0

    def apply_inconclusive(self, result: InconclusiveResult, url_key: str) -> bool:
        check = result.check  # recorded if the link takes it (Link.takes_attempt)
        self._cursor.execute(
            f"UPDATE links SET ({', '.join(_ATTEMPT_COLUMNS)}) = (%(attempted_at)s, %(reason)s, %(failure)s, "
            "%(http_status)s, %(attempts)s, %(next_attempt_at)s, %(given_up)s) "
            "WHERE username = %(username)s AND url_key = %(url_key)s "
            "AND (checked_at IS NULL OR checked_at < %(attempted_at)s) "
            "AND (last_attempt_at IS NULL OR last_attempt_at <= %(attempted_at)s) "
            "AND (%(link_created_at)s::timestamptz IS NULL OR created_at = %(link_created_at)s::timestamptz)",
            {"attempted_at": check.attempted_at, "reason": check.reason, "failure": check.failure,
             "http_status": check.http_status, "attempts": check.attempts, "next_attempt_at": check.next_attempt_at,
             "given_up": check.given_up, "username": result.username, "url_key": url_key,
             "link_created_at": result.link_created_at},
        )
        return self._cursor.rowcount > 0


class PostgresUnitOfWork(KitPostgresUnitOfWork, UnitOfWork):
    def __init__(self, begin: Any, *, filter_timeout_ms: int | None = None) -> None:
        super().__init__(begin)
        self._filter_timeout_ms = filter_timeout_ms

    def attach(self, cursor: psycopg2.extensions.cursor) -> None:
        self.links = PostgresLinkRepository(cursor, self._filter_timeout_ms)


class InMemoryLinkRepository(InMemoryStore, LinkRepository):
    """Behaves like the PostgreSQL repository, except that patterns are Python regular expressions."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, Link] = {}
        self.next_id = 1

    def lock_user(self, username: str) -> None:
        pass  # the unit of work holds the store's lock for its whole duration

    def count(self, username: str) -> int:
        return sum(1 for link in self.rows.values() if link.username == username)

    def get(self, username: str, url_key: str) -> Link | None:
        return next((link for link in self.rows.values()
                     if link.username == username and link.url_key == url_key), None)

    def add(self, link: Link) -> Link:
        stored = replace(link, id=self.next_id)
        self.rows[stored.id] = stored  # type: ignore[index]
        self.next_id += 1
        return stored

    def update(self, link: Link) -> None:
        self.rows[link.id] = link  # type: ignore[index]

    def delete(self, link: Link) -> None:
        del self.rows[link.id]  # type: ignore[arg-type]

    def list(self, username: str, link_filter: LinkFilter, after_id: int | None, limit: int) -> list[Link]:
        def matches(link: Link) -> bool:
            return (
                link.username == username
                and (after_id is None or link.id < after_id)  # type: ignore[operator]
                and all(re.search(pattern, getattr(link, parameter.removesuffix("_regex")))
                        for parameter, pattern in link_filter.patterns().items())
                and set(link_filter.tags) <= set(link.tags)
            )

        return sorted(filter(matches, self.rows.values()), key=lambda link: -link.id)[:limit]  # type: ignore[operator]

    def recently_changed(self, username: str, after: tuple[datetime, int] | None, limit: int) -> list[Link]:
        newest_first = sorted((link for link in self.rows.values() if link.username == username),
                              key=lambda link: (link.updated_at, link.id), reverse=True)
        return [link for link in newest_first if after is None or (link.updated_at, link.id) < after][:limit]

    def check_patterns(self, link_filter: LinkFilter) -> None:
        for parameter, pattern in link_filter.patterns().items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InvalidInput(parameter, f"invalid regular expression: {exc}") from None

    def apply_check(self, result: CheckResult, url_key: str) -> bool:
        link = self.get(result.username, url_key)
        if link is None or (link.checked_at is not None and link.checked_at > result.checked_at):
            return False
        if result.link_created_at is not None and link.created_at != result.link_created_at:
            return False
        attempt = link.inconclusive_check
        if attempt is not None and attempt.cleared_by(result.checked_at):
            attempt = None
        self.rows[link.id] = replace(link, status=result.status, http_status=result.http_status,  # type: ignore[index]
                                     status_reason=result.reason, checked_at=result.checked_at,
                                     inconclusive_check=attempt)
        return True

    def apply_inconclusive(self, result: InconclusiveResult, url_key: str) -> bool:
        link = self.get(result.username, url_key)
        if link is None or not link.takes_attempt(result.check.attempted_at):
            return False
        if result.link_created_at is not None and link.created_at != result.link_created_at:
            return False
        self.rows[link.id] = replace(link, inconclusive_check=result.check)  # type: ignore[index]
        return True


class InMemoryUnitOfWork(KitInMemoryUnitOfWork, UnitOfWork):
    def attach(self, store: InMemoryLinkRepository) -> None:
        self.links = store
