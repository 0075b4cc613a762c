"""NATS JetStream for synchronous services.

nats-py is asyncio; our services are threaded (gunicorn gthread). One background thread per
process runs an event loop that owns the connection; sync code submits coroutines to it. The
connection retries forever, so a broker outage degrades publishing (the outbox buffers) instead of
crashing the service.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError

from ...contracts.events import Event, StreamSpec
from ..observability import metrics
from ..observability.context import event_headers
from ..observability.logs import get_logger
from ..observability.tracing import producer_spans

log = get_logger(__name__)
T = TypeVar("T")

# Time for the tasks left on the loop at close to finish once cancelled.
_LOOP_FINISH_S = 2.0


class NatsUnavailable(ConnectionError):
    pass


class NatsConnection:
    def __init__(self, url: str, client_name: str, streams: Iterable[StreamSpec] = ()) -> None:
        self._servers = [part.strip() for part in url.split(",") if part.strip()]
        self._client_name = client_name
        self._streams = tuple(streams)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="nats-loop", daemon=True)
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams_ready = False
        self._closing = False
        self._connect_task: Future[None] | None = None
        self._reconnect_listeners: list[Callable[[], None]] = []

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._connect_task = asyncio.run_coroutine_threadsafe(self._connect_forever(), self._loop)

    def close(self, timeout: float = 10.0) -> None:
        """Drain the connection (what is queued goes out, subscriptions end), then stop the loop: every task still
        on it is cancelled and awaited and the loop is closed, so nothing is left pending at exit. Bounded by
        `timeout` (a broker that does not answer gets the connection closed instead of drained)."""
        self._closing = True
        deadline = time.monotonic() + timeout
        if not self._thread.is_alive():
            if self._thread.ident is None and not self._loop.is_closed():
                self._loop.close()  # never started
            return
        try:
            self.run(self._disconnect(max(0.1, timeout - 0.5)), timeout=timeout)
        except Exception as exc:  # closing a broken connection must not block shutdown
            log.warning("nats_close_failed", error=str(exc) or type(exc).__name__)
        try:
            self._loop.call_soon_threadsafe(self._loop.stop)
        except RuntimeError:
            pass  # already closed
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()) + _LOOP_FINISH_S)

    async def _disconnect(self, timeout: float) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
        client = self._client
        if client is None or client.is_closed:
            return
        try:
            await asyncio.wait_for(client.drain(), timeout)
        except Exception as exc:
            log.warning("nats_close_failed", error=str(exc) or type(exc).__name__)
        if not client.is_closed:
            try:
                await asyncio.wait_for(client.close(), 1.0)
            except Exception:
                pass  # the loop's tasks are cancelled next, whatever the client still holds

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._finish_loop()

    def _finish_loop(self) -> None:
        """Cancel and await what is left on the stopped loop (as asyncio.run does at its end), then close it."""
        loop = self._loop
        try:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=_LOOP_FINISH_S))
            for task in pending:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: a failure of a task being shut down is no news
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception as exc:
            log.warning("nats_close_failed", error=str(exc) or type(exc).__name__)
        finally:
            loop.close()

    async def _connect_forever(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                self._client = await nats.connect(
                    servers=self._servers,
                    name=self._client_name,
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                self._js = self._client.jetstream(timeout=5)
                log.info("nats_connected", servers=self._servers)
                break
            except Exception as exc:
                log.warning("nats_connect_failed", error=str(exc) or type(exc).__name__, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        await self._ensure_streams_until_done()

    async def _ensure_streams_until_done(self) -> None:
        delay = 0.2
        while not self._closing and not self._streams_ready:
            try:
                for spec in self._streams:
                    await self.ensure_stream(spec)
                self._streams_ready = True
            except Exception as exc:
                log.warning("nats_stream_setup_failed", error=str(exc) or type(exc).__name__, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _on_error(self, exc: Exception) -> None:
        # Called on every failed reconnect attempt; the disconnect itself is logged once at warning.
        if not self._closing:
            log.debug("nats_error", error=str(exc) or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("nats_disconnected")

    async def _on_reconnected(self) -> None:
        log.info("nats_reconnected")
        for listener in self._reconnect_listeners:
            listener()

    def on_reconnect(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from the loop thread; it must not block) whenever the connection is back."""
        self._reconnect_listeners.append(listener)

    # --- use ------------------------------------------------------------------------------
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    @property
    def ready(self) -> bool:
        return self.connected and self._streams_ready

    @property
    def jetstream(self) -> JetStreamContext:
        if self._js is None or not self.connected:
            raise NatsUnavailable("not connected to NATS")
        return self._js

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine on the connection's loop from any other thread and wait for it."""
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:  # the loop is closed: the connection was closed
            coroutine.close()
            raise NatsUnavailable("the NATS connection is closed") from None
        return future.result(timeout)

    def check(self) -> dict[str, Any]:
        """Readiness check: connected, and the streams this service uses exist."""
        if not self.connected:
            raise NatsUnavailable("not connected")
        if not self._streams_ready:
            raise NatsUnavailable("streams not set up yet")
        assert self._client is not None
        return {"server": self._client.connected_url.netloc if self._client.connected_url else None}

    async def ensure_stream(self, spec: StreamSpec) -> None:
        config = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            storage=StorageType.FILE,
            max_age=spec.max_age_days * 86400,
            duplicate_window=spec.duplicate_window_s,
        )
        try:
            await self.jetstream.add_stream(config)
        except BadRequestError as exc:
            # Already there with other settings: bring it to what the catalogue says.
            if exc.err_code == 10058:  # stream name already in use
                await self.jetstream.update_stream(config)
            else:
                raise

    def publish(self, event: Event, *, msg_id: str | None = None, timeout: float = 5.0) -> None:
        """Publish one event now and wait for JetStream's ack (for services without an outbox, whose
        events are derived from a consumed message: they ack that message only after this returns).
        The message id defaults to the event id, so a republished event is dropped by the server."""
        headers = event_headers(msg_id or event.event_id, event.request_id)
        self.run(self.publish_batch([(event.subject, event.encode(), headers)], timeout=timeout), timeout=timeout + 1)
        metrics.EVENTS_PUBLISHED.labels(self._client_name, event.subject).inc()

    async def publish_batch(self, messages: list[tuple[str, bytes, dict[str, str]]], timeout: float = 5.0) -> None:
        """Publish in order and wait for every JetStream ack; raises if any is not acknowledged."""
        js = self.jetstream
        with producer_spans(messages) as traced:
            acks = [
                asyncio.ensure_future(js.publish(subject, data, timeout=timeout, headers=headers))
                for subject, data, headers in traced
            ]
            results = await asyncio.gather(*acks, return_exceptions=True)
            failures = [result for result in results if isinstance(result, BaseException)]
            if failures:
                raise NatsUnavailable(f"{len(failures)} of {len(messages)} publishes failed: {failures[0]!r}")
