"""The unit of work every service's use cases run in: its state changes, the events they produce and
the consumed events it claims commit together or not at all.

A service declares its port (a subclass of UnitOfWork naming its repositories) and two adapters:
kit.postgres.unit_of_work.PostgresUnitOfWork (one database transaction; events go to the outbox) and
InMemoryUnitOfWork here (for fast unit tests; a snapshot restored on rollback). Each adapter only
says, in `attach`, which repositories it works with. Plain Python: use cases depend on this module.
"""
from __future__ import annotations

import abc
import copy
import threading
from typing import Any


class UnitOfWork(abc.ABC):
    @abc.abstractmethod
    def __enter__(self) -> Any: ...

    @abc.abstractmethod
    def __exit__(self, *exc_info: Any) -> None:
        """Commit when the block succeeded, roll back otherwise."""

    @abc.abstractmethod
    def publish(self, event: Any) -> None:
        """Publish `event` if, and only if, this unit of work commits."""

    @abc.abstractmethod
    def claim_event(self, consumer: str, event_id: str) -> bool:
        """False if `consumer` already handled `event_id` (commits with the unit of work)."""


class InMemoryStore:
    """Base of in-memory repositories: everything but the lock is state a rollback restores."""

    def __init__(self) -> None:
        self.lock = threading.RLock()

    def snapshot(self) -> dict[str, Any]:
        return {name: copy.deepcopy(value) for name, value in vars(self).items() if name != "lock"}

    def restore(self, snapshot: dict[str, Any]) -> None:
        vars(self).update(snapshot)


class InMemoryUnitOfWork(UnitOfWork):
    """Holds the store's lock for its whole duration (so units of work are serialised, like a
    database's locks would); changes apply on commit and vanish on rollback."""

    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.published: list[Any] = []  # what committed units of work published, for assertions
        self.claimed: set[tuple[str, str]] = set()

    @abc.abstractmethod
    def attach(self, store: Any) -> None:
        """Point this unit of work's repositories at the store."""

    def __enter__(self) -> Any:
        self._store.lock.acquire()
        self._snapshot = (self._store.snapshot(), set(self.claimed))
        self._pending: list[Any] = []
        self.attach(self._store)
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                self.published.extend(self._pending)
            else:
                state, self.claimed = self._snapshot
                self._store.restore(state)
        finally:
            self._store.lock.release()

    def publish(self, event: Any) -> None:
        self._pending.append(event)

    def claim_event(self, consumer: str, event_id: str) -> bool:
        if (consumer, event_id) in self.claimed:
            return False
        self.claimed.add((consumer, event_id))
        return True
