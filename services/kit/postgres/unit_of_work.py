"""The PostgreSQL unit of work: one database transaction in which a use case's state changes, the
events it publishes (rows of the outbox table, relayed to NATS by kit.messaging.outbox) and the
consumed events it claims (rows of processed_events) commit together or not at all."""
from __future__ import annotations

import abc
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg2.extensions
from psycopg2.extras import Json

from ...contracts.events import Event
from ..core.unit_of_work import UnitOfWork
from ..observability.context import event_headers

# The cursors (one per transaction) that wrote outbox rows, so whoever committed the transaction knows whether
# the relay has anything new to publish. Weak: an entry goes with its cursor.
_cursors_with_events: weakref.WeakSet[psycopg2.extensions.cursor] = weakref.WeakSet()


def record_event(cursor: psycopg2.extensions.cursor, event: Event) -> None:
    """Write `event` to the outbox in the caller's transaction: it is published if, and only if,
    the transaction commits."""
    headers = event_headers(event.event_id, event.request_id)
    cursor.execute(
        "INSERT INTO outbox (event_id, subject, payload, headers) VALUES (%s, %s, %s, %s)",
        (event.event_id, event.subject, Json(event.payload()), Json(headers)),
    )
    _cursors_with_events.add(cursor)


def recorded_events(cursor: psycopg2.extensions.cursor) -> bool:
    """Whether `record_event` wrote an event on `cursor`: after a commit, whether the outbox relay has news."""
    return cursor in _cursors_with_events


def claim_event(cursor: psycopg2.extensions.cursor, consumer: str, event_id: str) -> bool:
    """Record that `consumer` handled `event_id` in the caller's transaction.

    Returns False when it was handled before (a redelivery), so the handler skips its effect; the
    effect and the claim commit or roll back together, which is what makes consumers idempotent.
    """
    cursor.execute(
        "INSERT INTO processed_events (consumer, event_id) VALUES (%s, %s) "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        (consumer, event_id),
    )
    return cursor.fetchone() is not None


class PostgresUnitOfWork(UnitOfWork):
    """One database transaction; `begin` is ServiceRuntime.transaction (or Database.transaction)."""

    def __init__(self, begin: Callable[[], AbstractContextManager[psycopg2.extensions.cursor]]) -> None:
        self._begin = begin

    @abc.abstractmethod
    def attach(self, cursor: psycopg2.extensions.cursor) -> None:
        """Create this unit of work's repositories on the transaction's cursor."""

    def __enter__(self) -> Any:
        self._transaction = self._begin()
        self._cursor = self._transaction.__enter__()
        self.attach(self._cursor)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._transaction.__exit__(*exc_info)

    def publish(self, event: Event) -> None:
        record_event(self._cursor, event)

    def claim_event(self, consumer: str, event_id: str) -> bool:
        return claim_event(self._cursor, consumer, event_id)
