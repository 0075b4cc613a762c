"""The store guard: keeps the news store complete.

A new or emptied Redis has no generation marker (store.GENERATION_KEY). The guard looks for it at start-up,
every STORE_CHECK_INTERVAL seconds, and whenever a consumer or the readiness probe saw it missing; when it is
missing, the guard takes the store's rebuild lock (one replica rebuilds, the others go on serving) and runs the
rebuild (service.StoreRebuild) from the owning services, which writes the marker when it is done. The service
serves what it has meanwhile: consumers keep applying events, reads answer from what is there.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any

from ..kit.core.errors import Unavailable
from ..kit.observability.logs import get_logger
from ..kit.observability.metrics import PROJECTION_COMPLETE, PROJECTION_REBUILD_DURATION, PROJECTION_REBUILDS
from .service import FeedStore, RebuildAborted, RebuildResult, StoreRebuild

log = get_logger(__name__)

# A look at the marker on behalf of consumers happens at most this often (it is one GET).
_NOTICE_INTERVAL_S = 1.0
# After a failed rebuild (an owner unavailable), the next attempt comes after this, doubling up to the interval.
_FIRST_RETRY_S = 1.0


class RebuildStopped(Exception):
    """A rebuild that started did not finish (its cause is chained); it was counted and logged."""


class StoreGuard:
    def __init__(self, service: str, store: FeedStore, rebuild: StoreRebuild, *, interval_s: float,
                 lock_ttl_s: float = 30.0) -> None:
        self._service = service
        self._store = store
        self._rebuild = rebuild
        self._interval_s = interval_s
        self._lock_ttl_ms = int(lock_ttl_s * 1000)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._rebuilding = threading.Event()
        self._last_look = 0.0
        # As last seen: a missing marker, and a rebuild running elsewhere, are logged once per loss (then at debug).
        self._complete: bool | None = None
        self._elsewhere_reported = False
        self._thread: threading.Thread | None = None

    # --- running in the service -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="store-guard", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop watching; a rebuild in progress is abandoned at its next step (it is redone by whoever sees the
        marker missing next) and gives the lock up."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is None or self._thread.is_alive() or self._stopping.is_set()

    def notice(self) -> None:
        """Called after each consumed event: now and then, look at the marker, and wake the guard if it is gone
        (an emptied Redis is seen within about a second of traffic, not only at the next periodic check)."""
        now = time.monotonic()
        if now - self._last_look < _NOTICE_INTERVAL_S or self._rebuilding.is_set():
            return
        self._last_look = now
        try:
            missing = self._store.generation() is None
        except Unavailable:
            return  # the consumer's own writes report Redis being away
        if missing:
            self._wake.set()

    def readiness(self) -> dict[str, Any]:
        """A non-critical readiness check: reports the marker, fails (the service is `degraded`, still ready)
        while it is missing, and wakes the guard then."""
        generation = self._store.generation()
        if generation is None:
            self._wake.set()
            doing = "rebuilding from the owning services" if self._rebuilding.is_set() else "a rebuild is due"
            raise RuntimeError(f"the store has no generation marker (new or emptied): {doing}")
        return {"generation": generation}

    def _watch(self) -> None:
        trigger, retry_s = "startup", _FIRST_RETRY_S
        while not self._stopping.is_set():
            wait_s = self._interval_s
            try:
                self.ensure_complete(trigger)
                retry_s = _FIRST_RETRY_S
            except Exception as exc:  # an owner or Redis unavailable, or a bug: tried again soon
                if not isinstance(exc, RebuildStopped) and not self._stopping.is_set():  # that one is logged
                    log.warning("projection_check_failed", trigger=trigger, error=str(exc) or type(exc).__name__)
                wait_s, retry_s = retry_s, min(retry_s * 2, self._interval_s)
            woken = self._wake.wait(wait_s)
            self._wake.clear()
            trigger = "noticed" if woken else "periodic"

    # --- the check and the rebuild, also for `delinkcious news rebuild` ---------------------------
    def ensure_complete(self, trigger: str) -> RebuildResult | None:
        """Rebuild if the marker is missing; the result, or None when the store was complete (or another
        replica is rebuilding it)."""
        generation = self._store.generation()
        PROJECTION_COMPLETE.labels(self._service).set(0 if generation is None else 1)
        was_complete, self._complete = self._complete, generation is not None
        if generation is not None:
            self._elsewhere_reported = False
            return None
        (log.warning if was_complete is not False else log.debug)("projection_marker_missing", trigger=trigger)
        return self.rebuild(trigger, only_if_incomplete=True)

    def rebuild(self, trigger: str, *, only_if_incomplete: bool = False,
                lock_wait_s: float = 0.0) -> RebuildResult | None:
        """Rebuild under the store's lock, waiting up to `lock_wait_s` for it; None if someone else held it (or,
        with `only_if_incomplete`, if the store was complete by the time the lock was ours). RebuildStopped, caused
        by what stopped it (RebuildAborted, Unavailable...), when a started rebuild did not finish."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if not self._acquire(owner, lock_wait_s):
            (log.debug if self._elsewhere_reported else log.info)("projection_rebuild_elsewhere", trigger=trigger)
            self._elsewhere_reported = True
            return None
        lost = threading.Event()
        renewing = threading.Thread(target=self._renew, args=(owner, lost), name="store-guard-lock", daemon=True)
        try:
            if only_if_incomplete and self._store.generation() is not None:
                return None  # a replica finished the rebuild while we waited for the lock
            self._rebuilding.set()
            PROJECTION_COMPLETE.labels(self._service).set(0)
            renewing.start()
            started = time.perf_counter()
            log.info("projection_rebuild_started", trigger=trigger)

            def keep_going() -> None:
                if self._stopping.is_set():
                    raise RebuildAborted("the process is stopping")
                if lost.is_set():
                    raise RebuildAborted("lost the rebuild lock")

            try:
                result = self._rebuild.run(owner, keep_going)
            except Exception as exc:
                outcome = "aborted" if isinstance(exc, RebuildAborted) else "failed"
                PROJECTION_REBUILDS.labels(self._service, trigger, outcome).inc()
                error = str(exc) or type(exc).__name__
                log.warning("projection_rebuild_stopped", trigger=trigger, outcome=outcome, error=error,
                            duration_ms=round((time.perf_counter() - started) * 1000, 1))
                raise RebuildStopped(error) from exc
            seconds = time.perf_counter() - started
            PROJECTION_REBUILDS.labels(self._service, trigger, "completed").inc()
            PROJECTION_REBUILD_DURATION.labels(self._service).observe(seconds)
            PROJECTION_COMPLETE.labels(self._service).set(1)
            self._complete, self._elsewhere_reported = True, False
            log.info("projection_rebuild_completed", trigger=trigger, generation=result.generation,
                     follows=result.follows, authors=result.authors, items=result.items,
                     duration_ms=round(seconds * 1000, 1))
            return result
        finally:
            self._rebuilding.clear()
            lost.set()  # also stops the renewing thread
            if renewing.is_alive():
                renewing.join(2.0)
            try:
                self._store.release_rebuild_lock(owner)
            except Unavailable:
                pass  # it expires on its own

    def _acquire(self, owner: str, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while not self._store.acquire_rebuild_lock(owner, self._lock_ttl_ms):
            if time.monotonic() >= deadline or self._stopping.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
                return False
        return True

    def _renew(self, owner: str, lost: threading.Event) -> None:
        """Keep the lock while the rebuild runs; set `lost` if it is not ours any more."""
        while not lost.wait(self._lock_ttl_ms / 3000):
            try:
                if not self._store.renew_rebuild_lock(owner, self._lock_ttl_ms):
                    log.warning("projection_rebuild_lock_lost")
                    lost.set()
            except Unavailable:
                pass  # Redis away for a moment: the rebuild's own writes fail, or the next renewal succeeds
