"""How long the caller of the request being handled still waits for its answer: one context variable, like the
request id (kit.core.request_id), set from the caller's timeout when the request arrives
(kit.observability.context) and passed on, never longer, to the calls it makes.

Its use is the commit: a write whose caller has already given up is rolled back rather than committed
(kit.postgres.db), so that a caller's timeout means "not written" and not "written or not, nobody knows" — when
a database stalls, the statement may finish long after the caller answered its own client with a 503."""
from __future__ import annotations

import time
from contextvars import ContextVar, Token

_DEADLINE: ContextVar[float | None] = ContextVar("delinkcious_deadline", default=None)


def set_deadline(seconds_from_now: float | None) -> Token[float | None]:
    """The caller waits `seconds_from_now` more (None: no caller is waiting, e.g. an event's handler)."""
    return _DEADLINE.set(None if seconds_from_now is None else time.monotonic() + seconds_from_now)


def reset_deadline(token: Token[float | None]) -> None:
    _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds the caller still waits (0 once it has given up); None when nobody set a deadline."""
    deadline = _DEADLINE.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def caller_gave_up() -> bool:
    deadline = _DEADLINE.get()
    return deadline is not None and time.monotonic() >= deadline
