"""The two repositories a service's use cases are run against: the in-memory one and the PostgreSQL one."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from delinkcious.kit.postgres.db import Database
from delinkcious.kit.serving.runtime import ServiceDefinition

from tests.support.services import ServiceEnvironment


@dataclass
class Backend:
    name: str
    unit_of_work: Callable[[], Any]
    events_for: Callable[[str], list[dict[str, Any]]]  # events authored by a user, in order, with their subject


def postgres_database_fixture(definition: ServiceDefinition) -> Any:
    """A module-scoped `postgres_database` fixture: a pool on the service's migrated database."""

    @pytest.fixture(scope="module")
    def postgres_database(service_environment: ServiceEnvironment) -> Iterator[Database]:
        with service_environment.pool(definition, pool_size=8) as database:
            yield database

    return postgres_database


def published_events(uow: Any, author: str) -> list[dict[str, Any]]:
    """The events an in-memory unit of work published for `author`: payload and subject."""
    return [event.payload() | {"subject": event.subject} for event in uow.published if event.author == author]


def outbox_events(database: Database, author: str) -> list[dict[str, Any]]:
    """The events the PostgreSQL outbox holds for `author`, in order: payload and subject."""
    with database.transaction() as cursor:
        cursor.execute("SELECT subject, payload FROM outbox WHERE payload->>'author' = %s ORDER BY id", (author,))
        return [row["payload"] | {"subject": row["subject"]} for row in cursor.fetchall()]
