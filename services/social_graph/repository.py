"""Follow storage adapters: PostgreSQL for real, in memory for fast unit tests of the use cases.
tests/social_graph/test_service_contract.py holds both to the same behaviour."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg2.extensions

from ..kit.core.unit_of_work import InMemoryStore
from ..kit.core.unit_of_work import InMemoryUnitOfWork as KitInMemoryUnitOfWork
from ..kit.postgres.unit_of_work import PostgresUnitOfWork as KitPostgresUnitOfWork
from .domain import Direction, Follow
from .service import FollowRepository, KnownUsers, UnitOfWork

# Which column a listing selects on, per direction; each has its (column, id DESC) index.
_LIST_COLUMN: dict[str, str] = {"following": "follower", "followers": "followed"}


def _follow_from_row(row: dict[str, Any]) -> Follow:
    return Follow(id=row["id"], follower=row["follower"], followed=row["followed"], created_at=row["created_at"])


class PostgresFollowRepository(FollowRepository, KnownUsers):
    def __init__(self, cursor: psycopg2.extensions.cursor) -> None:
        self._cursor = cursor

    def add(self, follow: Follow) -> Follow | None:
        # A concurrent insert of the same pair makes this wait for that transaction, then do nothing:
        # exactly one of them gets a row back (and publishes the event).
        self._cursor.execute(
            "INSERT INTO follows (follower, followed, created_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (follower, followed) DO NOTHING RETURNING id",
            (follow.follower, follow.followed, follow.created_at),
        )
        row = self._cursor.fetchone()
        return replace(follow, id=row["id"]) if row else None

    def get(self, follower: str, followed: str) -> Follow | None:
        return self._one_edge("SELECT id, follower, followed, created_at FROM follows "
                              "WHERE follower = %s AND followed = %s", follower, followed)

    def remove(self, follower: str, followed: str) -> Follow | None:
        return self._one_edge("DELETE FROM follows WHERE follower = %s AND followed = %s "
                              "RETURNING id, follower, followed, created_at", follower, followed)

    def _one_edge(self, statement: str, follower: str, followed: str) -> Follow | None:
        self._cursor.execute(statement, (follower, followed))
        row = self._cursor.fetchone()
        return _follow_from_row(row) if row else None

    def list(self, username: str, direction: Direction, after_id: int | None, limit: int) -> list[Follow]:
        # The page must walk the (column, id DESC) index so that it never reads other users' edges. Given
        # `column = %s`, the planner drops the column from the ORDER BY as a constant and may walk follows_pkey
        # backwards instead, filtering on the user: through every newer edge when the user's edges are old. With
        # ANY and the index's whole key as the order, only that index yields the order without a sort
        # (tests/social_graph/test_query_plan.py).
        column = _LIST_COLUMN[direction]
        conditions = [f"{column} = ANY(ARRAY[%s])"]
        params: list[Any] = [username]
        if after_id is not None:
            conditions.append("id < %s")
            params.append(after_id)
        params.append(limit)
        self._cursor.execute(
            f"SELECT id, follower, followed, created_at FROM follows WHERE {' AND '.join(conditions)} "
            f"ORDER BY {column}, id DESC LIMIT %s",
            params,
        )
        return [_follow_from_row(row) for row in self._cursor.fetchall()]

    def walk(self, after_id: int | None, limit: int) -> list[Follow]:
        # Keyset on the primary key: each page is a range scan of follows_pkey, however many edges there are.
        self._cursor.execute(
            "SELECT id, follower, followed, created_at FROM follows WHERE id > %s ORDER BY id LIMIT %s",
            (after_id or 0, limit),
        )
        return [_follow_from_row(row) for row in self._cursor.fetchall()]

    # --- the projection of known users ----------------------------------------------------------
    def contains(self, username: str) -> bool:
        self._cursor.execute("SELECT 1 FROM known_users WHERE username = %s", (username,))
        return self._cursor.fetchone() is not None

    def record(self, username: str, known_since: datetime) -> None:
        self._cursor.execute(
            "INSERT INTO known_users (username, known_since) VALUES (%s, %s) ON CONFLICT (username) DO NOTHING",
            (username, known_since),
        )


class PostgresUnitOfWork(KitPostgresUnitOfWork, UnitOfWork):
    def attach(self, cursor: psycopg2.extensions.cursor) -> None:
        self.follows = self.known_users = PostgresFollowRepository(cursor)


class InMemoryFollowRepository(InMemoryStore, FollowRepository, KnownUsers):
    """Behaves like the PostgreSQL repository; the unit of work holds its lock throughout."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, Follow] = {}
        self.known: dict[str, datetime] = {}
        self.next_id = 1

    def add(self, follow: Follow) -> Follow | None:
        if self.get(follow.follower, follow.followed) is not None:
            return None
        stored = replace(follow, id=self.next_id)
        self.rows[self.next_id] = stored
        self.next_id += 1
        return stored

    def get(self, follower: str, followed: str) -> Follow | None:
        return next((edge for edge in self.rows.values()
                     if edge.follower == follower and edge.followed == followed), None)

    def remove(self, follower: str, followed: str) -> Follow | None:
        edge = self.get(follower, followed)
        if edge is not None:
            del self.rows[edge.id]  # type: ignore[arg-type]
        return edge

    def list(self, username: str, direction: Direction, after_id: int | None, limit: int) -> list[Follow]:
        column = _LIST_COLUMN[direction]
        newest_first = sorted(self.rows.items(), reverse=True)
        return [edge for edge_id, edge in newest_first
                if getattr(edge, column) == username and (after_id is None or edge_id < after_id)][:limit]

    def walk(self, after_id: int | None, limit: int) -> list[Follow]:
        return [edge for edge_id, edge in sorted(self.rows.items()) if after_id is None or edge_id > after_id][:limit]

    def contains(self, username: str) -> bool:
        return username in self.known

    def record(self, username: str, known_since: datetime) -> None:
        self.known.setdefault(username, known_since)


class InMemoryUnitOfWork(KitInMemoryUnitOfWork, UnitOfWork):
    def attach(self, store: InMemoryFollowRepository) -> None:
        self.follows = self.known_users = store
