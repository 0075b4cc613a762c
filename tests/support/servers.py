"""The pip-installed servers (PostgreSQL, NATS, Redis, the OIDC provider) for the span of a block."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar


class Server(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Server)


@contextmanager
def serving(server: S) -> Iterator[S]:
    """The server started, and stopped however the block ends (stopping one that never started is a no-op)."""
    try:
        server.start()
        yield server
    finally:
        server.stop()
