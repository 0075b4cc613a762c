"""The link checker's background work, beside its consumer: the retry workers, which take pending checks from
the retry queue when they are due and check them again, and the watch loop, which drives the NetworkWatch
(outage suspicion, probes) and keeps the queue's size metric current.

Both stop as soon as the process begins to stop (the runtime's StopSignal): a retry in progress is abandoned
and handed back to the queue, due at once, for another replica (or the next start) to take."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..kit.messaging.stopping import StopRequested, StopSignal
from ..kit.observability.context import request_scope
from ..kit.observability.logs import bound_contextvars, get_logger
from .service import CheckInProgress, CheckResult, HostBusy, LinkCheckService, NetworkWatch, PendingCheck, RetryQueue

log = get_logger(__name__)

# After an unexpected failure (Redis or NATS away), a taken check is handed back due this much later.
_FAILED_RETRY_DELAY_S = 5.0


class RetryWorkers:
    """`concurrency` threads, each taking one due pending check at a time while the checker is not paused."""

    def __init__(self, service: LinkCheckService, queue: RetryQueue, watch: NetworkWatch, *, concurrency: int,
                 poll_interval_s: float, lease_s: float, busy_delay_s: float, stopping: StopSignal,
                 record: Callable[[PendingCheck, CheckResult], None]) -> None:
        self._service = service
        self._queue = queue
        self._watch = watch
        self._concurrency = concurrency
        self._poll_interval_s = poll_interval_s
        self._lease_s = lease_s
        self._busy_delay_s = busy_delay_s
        self._stopping = stopping
        self._record = record
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, name=f"link-checker-retry-{index}", daemon=True)
                         for index in range(self._concurrency)]
        for thread in self._threads:
            thread.start()

    def is_alive(self) -> bool:
        return self._stopping.requested or all(thread.is_alive() for thread in self._threads)

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.requested:
            try:
                worked = self._one()
            except StopRequested:
                return
            except Exception as exc:  # noqa: BLE001 - Redis away: the loop goes on, the lease hands checks back
                log.warning("link_check_retry_failed", error=str(exc) or type(exc).__name__,
                            retry_in_s=self._poll_interval_s)
                worked = False
            if not worked and self._stopping.wait(self._poll_interval_s):
                return

    def _one(self) -> bool:
        """Check one due pending check; False when there was nothing to do."""
        if self._watch.paused:
            return False
        taken = self._queue.take_due(self._lease_s)
        if taken is None:
            return False
        key, pending = taken
        with request_scope(pending.request_id), bound_contextvars(event_id=pending.source_event_id):
            try:
                result = self._service.check_link(pending.request, source_event_id=pending.source_event_id,
                                                  pending=pending)
            except StopRequested:
                self._give_back(key, 0.0)
                raise
            except (HostBusy, CheckInProgress) as exc:
                log.info("link_check_postponed", error=str(exc), retry_in_s=self._busy_delay_s)
                self._give_back(key, self._busy_delay_s)
                return True
            except Exception as exc:
                log.warning("link_check_retry_failed", error=str(exc) or type(exc).__name__,
                            retry_in_s=_FAILED_RETRY_DELAY_S)
                self._give_back(key, _FAILED_RETRY_DELAY_S)
                return True
            self._record(pending, result)
        return True

    def _give_back(self, key: str, delay_s: float) -> None:
        try:
            self._queue.release(key, delay_s)
        except Exception as exc:  # noqa: BLE001 - its lease runs out and it is due again anyway
            log.warning("link_check_release_failed", error=str(exc) or type(exc).__name__)


class WatchLoop:
    """One thread: `watch.tick()` every `interval_s`, and the retry queue's size into `report_size`."""

    def __init__(self, watch: NetworkWatch, queue: RetryQueue, *, interval_s: float, stopping: StopSignal,
                 report_size: Callable[[int], Any], size_interval_s: float = 5.0) -> None:
        self._watch = watch
        self._queue = queue
        self._interval_s = interval_s
        self._stopping = stopping
        self._report_size = report_size
        self._size_interval_s = size_interval_s
        self._thread = threading.Thread(target=self._run, name="link-checker-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._stopping.requested or self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        since_size = self._size_interval_s  # report the size at once
        while not self._stopping.requested:
            try:
                self._watch.tick()
            except Exception as exc:  # noqa: BLE001 - the watch must outlive any one bad tick
                log.warning("checker_watch_failed", error=str(exc) or type(exc).__name__)
            since_size += self._interval_s
            if since_size >= self._size_interval_s:
                since_size = 0.0
                try:
                    self._report_size(self._queue.size())
                except Exception as exc:  # noqa: BLE001 - Redis away: keep the last value
                    log.debug("retry_queue_size_failed", error=str(exc) or type(exc).__name__)
            if self._stopping.wait(self._interval_s):
                return
