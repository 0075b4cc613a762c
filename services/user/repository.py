"""User storage adapters: PostgreSQL for real, in memory for fast unit tests of the use cases.
tests/user/test_service_contract.py holds both to the same behaviour."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg2.errors
import psycopg2.extensions

from ..kit.core.unit_of_work import InMemoryStore
from ..kit.core.unit_of_work import InMemoryUnitOfWork as KitInMemoryUnitOfWork
from ..kit.postgres.unit_of_work import PostgresUnitOfWork as KitPostgresUnitOfWork
from .domain import AccessToken, User
from .service import UnitOfWork, UserRepository

_USER_COLUMNS = "u.id, u.username, u.email, u.name, u.created_at, u.updated_at"


def _user(row: dict[str, Any]) -> User:
    return User(id=row["id"], username=row["username"], email=row["email"], name=row["name"],
                created_at=row["created_at"], updated_at=row["updated_at"])


def _token(row: dict[str, Any], username: str) -> AccessToken:
    return AccessToken(token_id=str(row["token_id"]), username=username, created_at=row["token_created_at"],
                       expires_at=row["expires_at"])


class PostgresUserRepository(UserRepository):
    def __init__(self, cursor: psycopg2.extensions.cursor) -> None:
        self._cursor = cursor

    def lock_identity(self, provider: str, subject: str) -> None:
        self._cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"identity:{provider}:{subject}",))

    def find_by_identity(self, provider: str, subject: str) -> User | None:
        self._cursor.execute(
            f"SELECT {_USER_COLUMNS} FROM identities i JOIN users u ON u.id = i.user_id "
            "WHERE i.provider = %s AND i.subject = %s", (provider, subject))
        row = self._cursor.fetchone()
        return _user(row) if row else None

    def find_by_username(self, username: str) -> User | None:
        self._cursor.execute(f"SELECT {_USER_COLUMNS} FROM users u WHERE u.username = %s", (username,))
        row = self._cursor.fetchone()
        return _user(row) if row else None

    def create_with_identity(self, user: User, provider: str, subject: str) -> User | None:
        self._cursor.execute("SAVEPOINT create_user")
        try:
            self._cursor.execute(
                "INSERT INTO users (username, email, name, created_at, updated_at) VALUES (%s, %s, %s, %s, %s) "
                "RETURNING id", (user.username, user.email, user.name, user.created_at, user.updated_at))
        except psycopg2.errors.UniqueViolation:
            self._cursor.execute("ROLLBACK TO SAVEPOINT create_user")  # someone else has that username
            return None
        created = replace(user, id=self._cursor.fetchone()["id"])
        self._cursor.execute("INSERT INTO identities (provider, subject, user_id) VALUES (%s, %s, %s)",
                             (provider, subject, created.id))
        self._cursor.execute("RELEASE SAVEPOINT create_user")
        return created

    def update_profile(self, user: User) -> None:
        self._cursor.execute("UPDATE users SET email = %s, name = %s, updated_at = %s WHERE id = %s",
                             (user.email, user.name, user.updated_at, user.id))

    def add_token(self, user: User, token_hash: bytes, token: AccessToken) -> None:
        self._cursor.execute(
            "INSERT INTO access_tokens (token_id, token_hash, user_id, created_at, expires_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            (token.token_id, psycopg2.Binary(token_hash), user.id, token.created_at, token.expires_at))

    def find_active_token(self, token_hash: bytes, now: datetime) -> tuple[User, AccessToken] | None:
        self._cursor.execute(
            f"SELECT {_USER_COLUMNS}, t.token_id, t.created_at AS token_created_at, t.expires_at "
            "FROM access_tokens t JOIN users u ON u.id = t.user_id "
            "WHERE t.token_hash = %s AND t.revoked_at IS NULL AND t.expires_at > %s",
            (psycopg2.Binary(token_hash), now))
        row = self._cursor.fetchone()
        return (_user(row), _token(row, row["username"])) if row else None

    def active_tokens(self, user: User, now: datetime) -> list[AccessToken]:
        self._cursor.execute(
            "SELECT token_id, created_at AS token_created_at, expires_at FROM access_tokens "
            "WHERE user_id = %s AND revoked_at IS NULL AND expires_at > %s ORDER BY created_at DESC",
            (user.id, now))
        return [_token(row, user.username) for row in self._cursor.fetchall()]

    def revoke_token(self, *, now: datetime, token_hash: bytes | None = None, user: User | None = None,
                     token_id: str | None = None) -> bool:
        if token_hash is not None:
            where, params = "token_hash = %s", [psycopg2.Binary(token_hash)]
        else:
            assert user is not None and token_id is not None
            where, params = "user_id = %s AND token_id::text = %s", [user.id, token_id]
        self._cursor.execute(
            f"UPDATE access_tokens SET revoked_at = %s WHERE {where} AND revoked_at IS NULL AND expires_at > %s",
            [now, *params, now])
        return self._cursor.rowcount > 0


class PostgresUnitOfWork(KitPostgresUnitOfWork, UnitOfWork):
    def attach(self, cursor: psycopg2.extensions.cursor) -> None:
        self.users = PostgresUserRepository(cursor)


@dataclass
class _StoredToken:
    token_hash: bytes
    token: AccessToken
    user_id: int
    revoked_at: datetime | None = None


class InMemoryUserRepository(InMemoryStore, UserRepository):
    def __init__(self) -> None:
        super().__init__()
        self.users: dict[int, User] = {}
        self.identities: dict[tuple[str, str], int] = {}
        self.tokens: list[_StoredToken] = []
        self.next_id = 1

    def lock_identity(self, provider: str, subject: str) -> None:
        pass  # the unit of work holds the store's lock for its whole duration

    def find_by_identity(self, provider: str, subject: str) -> User | None:
        user_id = self.identities.get((provider, subject))
        return self.users[user_id] if user_id is not None else None

    def find_by_username(self, username: str) -> User | None:
        return next((user for user in self.users.values() if user.username == username), None)

    def create_with_identity(self, user: User, provider: str, subject: str) -> User | None:
        if self.find_by_username(user.username) is not None:
            return None
        created = replace(user, id=self.next_id)
        self.next_id += 1
        self.users[created.id] = created  # type: ignore[index]
        self.identities[(provider, subject)] = created.id  # type: ignore[assignment]
        return created

    def update_profile(self, user: User) -> None:
        self.users[user.id] = user  # type: ignore[index]

    def add_token(self, user: User, token_hash: bytes, token: AccessToken) -> None:
        self.tokens.append(_StoredToken(token_hash, token, user.id))  # type: ignore[arg-type]

    def _active(self, now: datetime) -> list[_StoredToken]:
        return [stored for stored in self.tokens if stored.revoked_at is None and stored.token.expires_at > now]

    def find_active_token(self, token_hash: bytes, now: datetime) -> tuple[User, AccessToken] | None:
        stored = next((stored for stored in self._active(now) if stored.token_hash == token_hash), None)
        return (self.users[stored.user_id], stored.token) if stored else None

    def active_tokens(self, user: User, now: datetime) -> list[AccessToken]:
        tokens = [stored.token for stored in self._active(now) if stored.user_id == user.id]
        return sorted(tokens, key=lambda token: token.created_at, reverse=True)

    def revoke_token(self, *, now: datetime, token_hash: bytes | None = None, user: User | None = None,
                     token_id: str | None = None) -> bool:
        matches = [stored for stored in self._active(now)
                   if (stored.token_hash == token_hash if token_hash is not None
                       else stored.user_id == user.id and stored.token.token_id == token_id)]  # type: ignore[union-attr]
        for stored in matches:
            stored.revoked_at = now
        return bool(matches)


class InMemoryUnitOfWork(KitInMemoryUnitOfWork, UnitOfWork):
    def attach(self, store: InMemoryUserRepository) -> None:
        self.users = store
