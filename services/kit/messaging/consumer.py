"""Durable, explicitly acknowledged JetStream consumption for synchronous handlers.

A handler is a plain function taking an Event. It runs in a worker thread (it may block on the
database); the message is acked only after it returns, so a crash means redelivery, never loss.
Handlers make themselves idempotent with `claim_event` in their own transaction. At most
`max_in_flight` messages are outstanding per subscription; a free handler slot is refilled at once,
so one slow message does not hold up the others. While a handler runs longer than a third of the
subscription's ack wait, the message is marked in progress, so it is not redelivered meanwhile. A
message that can never be processed (malformed, or rejected as invalid) is terminated instead of
redelivered forever. Each subscription's backlog is reported as a gauge, refreshed periodically.
"""
from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ...contracts.events import Event, EventContract, InvalidEvent, StreamSpec
from ..core.errors import InvalidInput, NotFound
from ..observability import metrics
from ..observability.context import adopt_request_id, presented_in, request_scope
from ..observability.logs import bind_contextvars, bound_contextvars, get_logger
from .nats import NatsConnection

log = get_logger(__name__)

# Returns False when the event had been handled before (a redelivery), True or None otherwise.
EventHandler = Callable[[Event], "bool | None"]

# Errors that will not go away by retrying the same message.
_PERMANENT_ERRORS = (InvalidEvent, InvalidInput, NotFound)


@dataclass(frozen=True)
class Subscription:
    stream: StreamSpec
    subjects: tuple[str, ...]
    durable: str  # shared by all replicas of a service, so they split the work
    handler: EventHandler
    ack_wait_s: float = 30.0

    @classmethod
    def to(cls, *contracts: type[EventContract], durable: str, handler: EventHandler,
           ack_wait_s: float = 30.0) -> Subscription:
        """A subscription to these events (of one stream), by their contracts."""
        streams = {contract.stream for contract in contracts}
        if len(streams) != 1:
            raise ValueError(f"a subscription reads one stream, these events are on {len(streams)}")
        return cls(streams.pop(), tuple(contract.subject for contract in contracts), durable, handler, ack_wait_s)


class ConsumerGroup:
    """Runs every subscription of one process on the NATS connection's event loop."""

    def __init__(self, service: str, connection: NatsConnection, subscriptions: list[Subscription],
                 *, max_in_flight: int = 16, pending_report_interval: float = 5.0) -> None:
        self._service = service
        self._nats = connection
        self._subscriptions = subscriptions
        self._max_in_flight = max_in_flight
        self._pending_report_interval = pending_report_interval
        self._stopping = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="consumer")
        self._tasks: list[Future[None]] = []

    def start(self) -> None:
        for subscription in self._subscriptions:
            self._tasks.append(
                asyncio.run_coroutine_threadsafe(self._consume_forever(subscription), self._nats.loop)
            )

    def is_alive(self) -> bool:
        return all(not task.done() for task in self._tasks)

    def stop(self, timeout: float) -> None:
        """Stop fetching, let in-flight messages finish and be acked, then return."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for task in self._tasks:
            try:
                task.result(timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:  # unacked messages are redelivered to another instance
                log.warning("consumer_stop_incomplete", error=str(exc) or type(exc).__name__)
                task.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _consume_forever(self, subscription: Subscription) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                await self._consume(subscription)
                return
            except Exception as exc:  # broker down or consumer deleted: subscribe again
                if self._stopping.is_set():
                    return
                log.warning("consumer_subscribe_failed", durable=subscription.durable,
                            error=str(exc) or type(exc).__name__, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _consume(self, subscription: Subscription) -> None:
        while not self._nats.connected:
            if self._stopping.is_set():
                return
            await asyncio.sleep(0.2)
        await self._nats.ensure_stream(subscription.stream)
        config = ConsumerConfig(
            durable_name=subscription.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=subscription.ack_wait_s,
            max_ack_pending=self._max_in_flight,
            max_deliver=-1,
            filter_subjects=list(subscription.subjects) if len(subscription.subjects) > 1 else None,
            filter_subject=subscription.subjects[0] if len(subscription.subjects) == 1 else None,
        )
        pull = await self._nats.jetstream.pull_subscribe(
            subscription.subjects[0] if len(subscription.subjects) == 1 else "",
            durable=subscription.durable,
            stream=subscription.stream.name,
            config=config,
        )
        log.info("consumer_started", durable=subscription.durable, subjects=list(subscription.subjects))
        in_flight: set[asyncio.Task[None]] = set()
        reporter = asyncio.ensure_future(self._report_pending(subscription))
        try:
            while not self._stopping.is_set():
                free = self._max_in_flight - len(in_flight)
                if free <= 0:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = await pull.fetch(free, timeout=1.0)
                except (NatsTimeoutError, asyncio.TimeoutError):
                    continue
                for message in messages:
                    task = asyncio.ensure_future(self._handle(subscription, message))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
        finally:
            reporter.cancel()
            # Stopping (or a broken subscription) still lets what was taken finish and be acked.
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            try:
                await pull.unsubscribe()
            except Exception:
                pass

    async def _report_pending(self, subscription: Subscription) -> None:
        """Keep delinkcious_consumer_pending_messages current for this durable consumer."""
        gauge = metrics.CONSUMER_PENDING.labels(self._service, subscription.durable)
        while True:
            try:
                info = await self._nats.jetstream.consumer_info(subscription.stream.name, subscription.durable)
                gauge.set((info.num_pending or 0) + (info.num_ack_pending or 0))
            except Exception as exc:  # the broker is away: keep the last value, try again later
                log.debug("consumer_info_failed", durable=subscription.durable, error=str(exc) or type(exc).__name__)
            await asyncio.sleep(self._pending_report_interval)

    @staticmethod
    async def _wait_marking_progress(message: Msg, handled: asyncio.Future[bool | None],
                                     ack_wait_s: float) -> bool | None:
        """Wait for the handler; tell JetStream the message is still being worked on every third of
        its ack wait, so a slow handler keeps its message instead of seeing it redelivered."""
        interval = max(0.5, ack_wait_s / 3)
        while True:
            done, _ = await asyncio.wait({handled}, timeout=interval)
            if done:
                return handled.result()
            try:
                await message.in_progress()
            except Exception:
                pass  # at worst the message is redelivered; the handler is idempotent

    async def _handle(self, subscription: Subscription, message: Msg) -> None:
        # Each message is handled in its own task, so the bound context is this message's alone.
        with request_scope(presented_in(message.headers)), \
                bound_contextvars(consumer=subscription.durable, subject=message.subject):
            await self._handle_in_context(subscription, message)

    async def _handle_in_context(self, subscription: Subscription, message: Msg) -> None:
        started = time.perf_counter()
        consumer = subscription.durable
        outcome = "processed"
        try:
            event = Event.decode(message.subject, message.data)
        except InvalidEvent as exc:
            log.error("event_rejected", error=str(exc))
            await message.term()
            self._record(consumer, "rejected", started)
            return
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        context.run(bind_contextvars, event_id=event.event_id)
        if event.request_id and not presented_in(message.headers):
            # No header (a publisher without one): the payload's request id still joins the lines up.
            context.run(adopt_request_id, event.request_id)

        def run_handler() -> bool | None:
            return context.run(subscription.handler, event)

        try:
            handled = loop.run_in_executor(self._executor, run_handler)
            if await self._wait_marking_progress(message, handled, subscription.ack_wait_s) is False:
                outcome = "duplicate"
            await message.ack()
        except _PERMANENT_ERRORS as exc:
            outcome = "rejected"
            log.error("event_rejected", event_id=event.event_id, error=str(exc))
            await message.term()
        except Exception as exc:
            outcome = "retried"
            deliveries = message.metadata.num_delivered if message.metadata else 1
            delay = min(0.5 * 2 ** min(deliveries, 6), 30.0)
            log.warning("event_handling_failed", event_id=event.event_id,
                        error=str(exc) or type(exc).__name__, deliveries=deliveries, retry_in_s=delay)
            try:
                await message.nak(delay=delay)
            except Exception:
                pass  # not acked: the server redelivers after ack_wait anyway
        self._record(consumer, outcome, started)

    def _record(self, consumer: str, outcome: str, started: float) -> None:
        metrics.EVENTS_CONSUMED.labels(self._service, consumer, outcome).inc()
        metrics.EVENT_HANDLING_DURATION.labels(self._service, consumer).observe(time.perf_counter() - started)
