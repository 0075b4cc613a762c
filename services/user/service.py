"""Use cases of the user service: log in (create or update), look up, and manage access tokens."""
from __future__ import annotations

import abc
import uuid
from collections.abc import Callable
from datetime import datetime

from ..contracts.events import Event, UserCreated
from ..kit.core.clock import utc_now
from ..kit.core.errors import InvalidInput, NotFound
from ..kit.core.unit_of_work import UnitOfWork as KitUnitOfWork
from .domain import (
    AccessToken,
    InvalidToken,
    IssuedToken,
    LoginIdentity,
    User,
    new_token_secret,
    token_expiry,
    token_hash,
    username_base,
    username_candidates,
)


# --- ports ------------------------------------------------------------------------------------
class UserRepository(abc.ABC):
    """Storage of users, identities and tokens; PostgreSQL and in-memory implementations are held to
    the same behaviour by tests/user/test_service_contract.py."""

    @abc.abstractmethod
    def lock_identity(self, provider: str, subject: str) -> None:
        """Serialise logins of one identity until the unit of work ends."""

    @abc.abstractmethod
    def find_by_identity(self, provider: str, subject: str) -> User | None: ...

    @abc.abstractmethod
    def find_by_username(self, username: str) -> User | None: ...

    @abc.abstractmethod
    def create_with_identity(self, user: User, provider: str, subject: str) -> User | None:
        """Insert the user and its identity; None (and nothing written) if the username is taken."""

    @abc.abstractmethod
    def update_profile(self, user: User) -> None: ...

    @abc.abstractmethod
    def add_token(self, user: User, token_hash: bytes, token: AccessToken) -> None: ...

    @abc.abstractmethod
    def find_active_token(self, token_hash: bytes, now: datetime) -> tuple[User, AccessToken] | None:
        """One indexed lookup: this runs on every API call."""

    @abc.abstractmethod
    def active_tokens(self, user: User, now: datetime) -> list[AccessToken]: ...

    @abc.abstractmethod
    def revoke_token(self, *, now: datetime, token_hash: bytes | None = None, user: User | None = None,
                     token_id: str | None = None) -> bool:
        """Revoke by secret (logout) or by the owner's token id; False if nothing active matched."""


class UnitOfWork(KitUnitOfWork):
    users: UserRepository



# --- use cases --------------------------------------------------------------------------------
class UserService:
    def __init__(self, unit_of_work: Callable[[], UnitOfWork], *, token_ttl_seconds: int,
                 max_token_ttl_seconds: int, clock: Callable[[], datetime] = utc_now) -> None:
        self._uow = unit_of_work
        self._default_ttl = token_ttl_seconds
        self._max_ttl = max_token_ttl_seconds
        self._now = clock

    def login(self, identity: LoginIdentity) -> tuple[User, bool]:
        """The user behind this identity, created on first login; True when created."""
        now = self._now()
        with self._uow() as uow:
            uow.users.lock_identity(identity.provider, identity.subject)
            existing = uow.users.find_by_identity(identity.provider, identity.subject)
            if existing is not None:
                updated = User(
                    id=existing.id, username=existing.username, created_at=existing.created_at,
                    email=identity.email or existing.email, name=identity.name or existing.name,
                    updated_at=now,
                )
                if (updated.email, updated.name) != (existing.email, existing.name):
                    uow.users.update_profile(updated)
                    return updated, False
                return existing, False
            for candidate in username_candidates(username_base(identity.login, identity.subject)):
                created = uow.users.create_with_identity(
                    User(username=candidate, email=identity.email, name=identity.name, created_at=now,
                         updated_at=now),
                    identity.provider, identity.subject,
                )
                if created is not None:
                    uow.publish(user_created_event(created))
                    return created, True
        raise AssertionError("username_candidates never runs out")

    def get(self, username: str) -> User:
        with self._uow() as uow:
            user = uow.users.find_by_username(username)
        if user is None:
            raise NotFound(f"username: no user {username}")
        return user

    def issue_token(self, username: str, ttl_seconds: int | None = None) -> IssuedToken:
        ttl = self._default_ttl if ttl_seconds is None else ttl_seconds
        if not 60 <= ttl <= self._max_ttl:
            raise InvalidInput("ttl_seconds", f"must be between 60 and {self._max_ttl}")
        now = self._now()
        secret = new_token_secret()
        with self._uow() as uow:
            user = uow.users.find_by_username(username)
            if user is None:
                raise NotFound(f"username: no user {username}")
            token = AccessToken(token_id=_token_id(), username=username, created_at=now,
                                expires_at=token_expiry(now, ttl))
            uow.users.add_token(user, token_hash(secret), token)
        return IssuedToken(secret=secret, token=token)

    def verify_token(self, secret: str) -> tuple[User, AccessToken]:
        with self._uow() as uow:
            found = uow.users.find_active_token(token_hash(secret), self._now())
        if found is None:
            raise InvalidToken("token is unknown, expired or revoked")
        return found

    def revoke_token(self, secret: str) -> None:
        """Logout: revoking an unknown or already revoked token is not an error."""
        with self._uow() as uow:
            uow.users.revoke_token(now=self._now(), token_hash=token_hash(secret))

    def list_tokens(self, username: str) -> list[AccessToken]:
        with self._uow() as uow:
            user = uow.users.find_by_username(username)
            if user is None:
                raise NotFound(f"username: no user {username}")
            return uow.users.active_tokens(user, self._now())

    def revoke_token_by_id(self, username: str, token_id: str) -> None:
        with self._uow() as uow:
            user = uow.users.find_by_username(username)
            if user is None or not uow.users.revoke_token(now=self._now(), user=user, token_id=token_id):
                raise NotFound(f"token_id: no active token {token_id} for {username}")


def _token_id() -> str:
    return str(uuid.uuid4())


def user_created_event(user: User) -> Event:
    return UserCreated(username=user.username, name=user.name).to_event(author=user.username)
