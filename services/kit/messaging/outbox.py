"""Transactional outbox.

kit.postgres.unit_of_work.record_event writes an event row inside the caller's transaction, so a
committed state change always has its event and a rolled-back one never does. The relay publishes pending rows to
JetStream with the event id as Nats-Msg-Id (server-side dedup), marks them sent, retries with
backoff while NATS or PostgreSQL is down, and drains what is left on shutdown. It is woken by commits
that wrote events (ServiceRuntime.transaction) and by NATS reconnects, polls as a safety net for rows
committed elsewhere, and works on the service's pool, like a request.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from ..observability import metrics
from ..observability.logs import get_logger
from ..postgres.db import Database
from .nats import NatsConnection

log = get_logger(__name__)


class OutboxRelay:
    def __init__(
        self,
        service: str,
        database: Database,
        nats_connection: NatsConnection,
        *,
        poll_interval: float = 1.0,
        batch_size: int = 100,
        retention_hours: float = 24.0,
    ) -> None:
        self._service = service
        self._db = database
        self._nats = nats_connection
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._retention_hours = retention_hours
        self._wake = threading.Event()  # a commit wrote events, NATS is back, or stop
        # Ends a back-off early: NATS is back, or stop. Not a commit: while the broker is down every write would
        # otherwise set off another failing attempt (and a transaction) past the back-off.
        self._retry_now = threading.Event()
        self._notifications = 0
        self._notifications_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        nats_connection.on_reconnect(self._broker_back)  # publish the backlog as soon as the broker is back
        self._last_prune = 0.0
        self._last_stats = 0.0

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """A transaction that wrote events committed (or NATS is back): publish now rather than at the next poll."""
        with self._notifications_lock:
            self._notifications += 1
        self._wake.set()

    def _broker_back(self) -> None:
        self._retry_now.set()
        self.notify()

    @property
    def notifications(self) -> int:
        """How many times the relay was asked to publish at once, since it was created: what shows that reads
        leave it alone."""
        return self._notifications

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop_and_drain(self, timeout: float) -> int:
        """Stop the loop, then publish whatever is still pending within `timeout` seconds.

        Returns the number of events still unpublished (they stay in the outbox and are published
        by the next instance to start).
        """
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self._retry_now.set()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            try:
                if self.publish_pending() == 0:
                    break
            except Exception as exc:
                log.warning("outbox_drain_retry", error=str(exc) or type(exc).__name__)
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        remaining = self._pending_count_or_unknown()
        log.info("outbox_drained", remaining=remaining)
        return remaining

    # --- work -----------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                published = self.publish_pending()
                if failures:
                    log.info("outbox_relay_recovered", after_failures=failures)
                failures = 0
                self._housekeeping_if_due()
                if published:
                    continue  # there may be more: loop without waiting
            except Exception as exc:
                failures += 1
                metrics.OUTBOX_PUBLISH_FAILURES.labels(self._service).inc()
                delay = min(0.2 * 2 ** min(failures, 6), 5.0)
                if failures == 1 or failures % 20 == 0:
                    log.warning("outbox_publish_failed", error=str(exc) or type(exc).__name__,
                                failures=failures, retry_in_s=delay)
                self._refresh_stats_quietly()
                self._retry_now.wait(delay)
                self._retry_now.clear()
                self._wake.clear()  # the next attempt publishes whatever those commits wrote
                continue
            self._wake.wait(self._poll_interval)
            self._wake.clear()

    def publish_pending(self) -> int:
        """Publish one batch of pending events; returns how many were published."""
        with self._db.transaction() as cursor:
            # Marking rows published need not wait for the disk: if a crash loses the mark, the rows are
            # published again, and the stream's duplicate window and the consumers' claims drop the repeat.
            # SKIP LOCKED lets several workers/replicas relay at once without publishing a row twice.
            cursor.execute(
                "SET LOCAL synchronous_commit = off; "  # same round trip as the SELECT
                "SELECT id, subject, payload, headers FROM outbox WHERE published_at IS NULL "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (self._batch_size,),
            )
            rows = cursor.fetchall()
            if not rows:
                return 0
            messages = [
                (row["subject"], json.dumps(row["payload"], separators=(",", ":"), ensure_ascii=False).encode(),
                 dict(row["headers"]))
                for row in rows
            ]
            self._nats.run(self._nats.publish_batch(messages), timeout=30)
            cursor.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", ([row["id"] for row in rows],)
            )
        for subject, _data, _headers in messages:
            metrics.EVENTS_PUBLISHED.labels(self._service, subject).inc()
        return len(rows)

    def stats(self) -> dict[str, Any]:
        """Outbox lag for readiness detail and metrics."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "SELECT count(*) AS pending, "
                "COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) AS oldest_age_s "
                "FROM outbox WHERE published_at IS NULL"
            )
            row = cursor.fetchone()
        pending, lag = int(row["pending"]), round(float(row["oldest_age_s"]), 3)
        metrics.OUTBOX_PENDING.labels(self._service).set(pending)
        metrics.OUTBOX_LAG.labels(self._service).set(lag)
        return {"pending_events": pending, "lag_seconds": lag}

    def _refresh_stats_quietly(self) -> None:
        # During a broker outage the lag gauge is what alerts; keep it moving while the DB answers.
        if time.monotonic() - self._last_stats < 5:
            return
        self._last_stats = time.monotonic()
        try:
            self.stats()
        except Exception:
            pass  # the database is down too; readiness reports that

    def _pending_count_or_unknown(self) -> int:
        try:
            return int(self.stats()["pending_events"])
        except Exception:
            return -1

    def _housekeeping_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_stats >= 5:
            self._last_stats = now
            self.stats()  # keeps the lag gauges fresh between scrapes
        if now - self._last_prune < 300:
            return
        self._last_prune = now
        # Published rows are kept for a while for debugging, then deleted in small batches.
        # Claims of consumed events outlive the streams' 7-day max age, so a replay stays deduplicated.
        with self._db.transaction() as cursor:
            cursor.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < now() - "
                "make_interval(secs => %s) LIMIT 10000)",
                (self._retention_hours * 3600,),
            )
            cursor.execute(
                "DELETE FROM processed_events WHERE ctid IN (SELECT ctid FROM processed_events "
                "WHERE processed_at < now() - interval '30 days' LIMIT 10000)"
            )
