"""The user use cases against BOTH the in-memory and the PostgreSQL repository."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from delinkcious.kit.core.errors import InvalidInput, NotFound
from delinkcious.kit.postgres.db import Database
from delinkcious.user.app import DEFINITION
from delinkcious.user.domain import InvalidToken, LoginIdentity
from delinkcious.user.repository import InMemoryUnitOfWork, InMemoryUserRepository, PostgresUnitOfWork
from delinkcious.user.service import UserService

from tests.support.services import unique_username


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def postgres_database(service_environment) -> Iterator[Database]:
    with service_environment.pool(DEFINITION, pool_size=8) as database:
        yield database


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "postgres"])
def backend(request) -> tuple[Any, Any]:
    """(unit-of-work factory, events_for(username))"""
    if request.param == "memory":
        uow = InMemoryUnitOfWork(InMemoryUserRepository())
        return (lambda: uow), (lambda username: [e.payload() for e in uow.published if e.author == username])
    database: Database = request.getfixturevalue("postgres_database")

    def outbox_events(username: str) -> list[dict[str, Any]]:
        with database.transaction() as cursor:
            cursor.execute("SELECT payload FROM outbox WHERE payload->>'author' = %s ORDER BY id", (username,))
            return [row["payload"] for row in cursor.fetchall()]

    return (lambda: PostgresUnitOfWork(database.transaction)), outbox_events


@pytest.fixture
def service(backend, clock) -> UserService:
    return UserService(backend[0], token_ttl_seconds=3600, max_token_ttl_seconds=86400, clock=clock)


def identity(login: str, subject: str | None = None, provider: str = "github", **extra: Any) -> LoginIdentity:
    return LoginIdentity.parse({"provider": provider, "subject": subject or f"sub-{login}", "login": login, **extra})


def test_first_login_creates_the_user_and_one_event(service, backend):
    login = unique_username("ann")
    user, created = service.login(identity(login, email="ann@example.com", name="Ann"))
    assert created and user.username == login and user.email == "ann@example.com"
    again, created_again = service.login(identity(login))
    assert not created_again and again.username == login and again.email == "ann@example.com"
    events = backend[1](login)
    assert [(event["event_type"], event["username"], event["name"]) for event in events] == [
        ("user_created", login, "Ann")]
    assert "email" not in events[0]


def test_profile_is_updated_on_later_logins(service, clock):
    login = unique_username("bob")
    service.login(identity(login, name="Bob"))
    clock.now += timedelta(minutes=5)
    updated, _ = service.login(identity(login, name="Robert", email="bob@example.com"))
    assert (updated.name, updated.email, updated.updated_at) == ("Robert", "bob@example.com", clock.now)
    assert service.get(login).name == "Robert"


def test_a_taken_username_is_never_overwritten(service):
    login = unique_username("cat")
    first, _ = service.login(identity(login, subject="one"))
    second, created = service.login(identity(login.upper(), subject="two"))
    third, _ = service.login(identity(login, subject="three", provider="oidc"))
    assert created and first.username == login
    assert second.username == f"{login}-2" and third.username == f"{login}-3"
    assert service.login(identity(login, subject="one"))[0].username == login


def test_same_login_from_two_providers_are_two_identities(service):
    login = unique_username("dan")
    github, _ = service.login(identity(login, subject="42", provider="github"))
    oidc, _ = service.login(identity(login, subject="42", provider="oidc"))
    assert github.username != oidc.username


def test_concurrent_first_logins_of_one_identity_create_one_user(service, backend):
    login = unique_username("eve")
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(service.login(identity(login)))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {user.username for user, _ in results} == {login}
    assert sum(created for _, created in results) == 1
    assert len(backend[1](login)) == 1


def test_unknown_user_is_not_found(service):
    with pytest.raises(NotFound):
        service.get(unique_username())
    with pytest.raises(NotFound):
        service.issue_token(unique_username())


def test_token_lifecycle(service, clock):
    login = unique_username("fay")
    service.login(identity(login))
    issued = service.issue_token(login)
    user, token = service.verify_token(issued.secret)
    assert user.username == login and token.token_id == issued.token.token_id
    assert token.expires_at == clock.now + timedelta(hours=1)
    clock.now += timedelta(seconds=1)
    second = service.issue_token(login, ttl_seconds=600)
    assert [t.token_id for t in service.list_tokens(login)] == [second.token.token_id, issued.token.token_id]

    service.revoke_token(issued.secret)
    service.revoke_token(issued.secret)  # logging out twice is fine
    with pytest.raises(InvalidToken):
        service.verify_token(issued.secret)
    assert [t.token_id for t in service.list_tokens(login)] == [second.token.token_id]

    service.revoke_token_by_id(login, second.token.token_id)
    with pytest.raises(NotFound):
        service.revoke_token_by_id(login, second.token.token_id)
    with pytest.raises(InvalidToken):
        service.verify_token(second.secret)


def test_tokens_expire(service, clock):
    login = unique_username("gus")
    service.login(identity(login))
    issued = service.issue_token(login, ttl_seconds=60)
    clock.now += timedelta(seconds=61)
    with pytest.raises(InvalidToken):
        service.verify_token(issued.secret)
    assert service.list_tokens(login) == []


def test_a_user_cannot_revoke_someone_elses_token(service):
    owner, other = unique_username("own"), unique_username("oth")
    service.login(identity(owner))
    service.login(identity(other))
    issued = service.issue_token(owner)
    with pytest.raises(NotFound):
        service.revoke_token_by_id(other, issued.token.token_id)
    assert service.verify_token(issued.secret)[0].username == owner


@pytest.mark.parametrize("ttl", [0, 59, 86401])
def test_token_lifetime_is_bounded(service, ttl):
    login = unique_username("ttl")
    service.login(identity(login))
    with pytest.raises(InvalidInput) as raised:
        service.issue_token(login, ttl_seconds=ttl)
    assert raised.value.field == "ttl_seconds"


def test_token_verification_is_one_index_lookup(postgres_database):
    with postgres_database.transaction() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # tiny test tables would make any plan a seq scan
        cursor.execute(
            "EXPLAIN SELECT u.username FROM access_tokens t JOIN users u ON u.id = t.user_id "
            "WHERE t.token_hash = %s AND t.revoked_at IS NULL AND t.expires_at > now()", (b"\x00" * 32,))
        plan = "\n".join(row["QUERY PLAN"] for row in cursor.fetchall())
    assert "access_tokens_token_hash_key" in plan and "Seq Scan" not in plan
