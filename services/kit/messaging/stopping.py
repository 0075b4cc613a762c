"""How work in progress learns that its process is stopping, so work that can be redone gives way at once.

A process has one StopSignal (`ServiceRuntime.stopping`). It is raised once, at SIGTERM, before anything
else stops. A handler whose work can be redone elsewhere (a link check: its message is redelivered to
another replica) waits through the signal instead of `time.sleep` or an uninterruptible socket read:

- `stopping.sleep(seconds)` sleeps, and raises StopRequested at once when the stop comes;
- `with stopping.aborting(cut): ...` runs a blocking call that cannot watch the signal (an HTTP request);
  `cut` is called when the stop comes (e.g. shutting the socket down), and the exception the call then
  raises becomes StopRequested.

The consumer naks a message whose handler raised StopRequested, without delay, so another replica takes it
at once; a handler that never looks at the signal is work that cannot be redone, and is waited for.
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..observability.logs import get_logger

log = get_logger(__name__)


class StopRequested(Exception):
    """The process is stopping: this work was abandoned, to be redone elsewhere (its message is redelivered)."""

    def __init__(self, message: str = "the process is stopping") -> None:
        super().__init__(message)


class StopSignal:
    """Raised once when the process begins to stop; read from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._cuts: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        """Raise the signal (idempotent) and cut every blocking call registered with `aborting`.
        Not from a signal handler: it takes a lock the interrupted thread may hold."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            cuts = list(self._cuts.values())
        for cut in cuts:
            _cut_quietly(cut)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the signal is raised or `timeout` passes; True if it was raised."""
        return self._event.wait(timeout)

    def raise_if_requested(self) -> None:
        if self._event.is_set():
            raise StopRequested()

    def sleep(self, seconds: float) -> None:
        """`time.sleep` that raises StopRequested as soon as the signal is raised (at once if it already is)."""
        if self._event.wait(max(0.0, seconds)):
            raise StopRequested()

    @contextmanager
    def aborting(self, cut: Callable[[], None]) -> Iterator[None]:
        """Run a blocking call that cannot watch the signal: `cut` is called (from the stopping thread) if the
        signal is raised while the block runs, at once if it already was. If the block then raises, the error
        becomes StopRequested; a block that completes keeps its result."""
        key = next(self._ids)
        with self._lock:
            already = self._event.is_set()
            if not already:
                self._cuts[key] = cut
        if already:
            raise StopRequested()
        try:
            yield
        except StopRequested:
            raise
        except Exception as exc:
            if self._event.is_set():
                raise StopRequested() from exc
            raise
        finally:
            with self._lock:
                self._cuts.pop(key, None)


def _cut_quietly(cut: Callable[[], None]) -> None:
    try:
        cut()
    except Exception as exc:  # one failing cut must not keep the others waiting
        log.warning("stop_cut_failed", error=str(exc) or type(exc).__name__)
