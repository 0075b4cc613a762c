"""Durable, explicitly acknowledged JetStream consumption for synchronous handlers.

A handler is a plain function taking an Event. It runs in a thread of its own (it may block on the
database); the message is acked only after it returns, so a crash means redelivery, never loss.
Handlers make themselves idempotent with `claim_event` in their own transaction. At most
`max_in_flight` messages are outstanding per subscription; a free handler slot is refilled at once,
so one slow message does not hold up the others. While a handler runs longer than a third of the
subscription's ack wait, the message is marked in progress, so it is not redelivered meanwhile. A
message that can never be processed (malformed, or rejected as invalid) is terminated instead of
redelivered forever. Each subscription's backlog is reported as a gauge, refreshed periodically.

Stopping (`begin_stop` at SIGTERM, then `stop(timeout)`): fetching stops at once. A handler whose work
can be redone waits through the process's StopSignal (`kit.messaging.stopping`) and raises StopRequested
when the stop comes; its message is nak'ed without delay, so another replica takes it now rather than
after the ack wait. Other handlers are work that cannot be redone: they finish and are acked, until the
timeout. One still running then is given up (its message nak'ed; its thread does not hold the process).
A message is nak'ed only once no pull request of this consumer can still be open on the server, so the
redelivery goes to another consumer, not back to this one.
"""
from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError

from ...contracts.events import Event, EventContract, InvalidEvent, StreamSpec
from ..core.errors import InvalidInput, NotFound, RetryLater
from ..observability import metrics
from ..observability.context import adopt_request_id, presented_in, request_scope
from ..observability.logs import bind_contextvars, bound_contextvars, get_logger
from ..observability.tracing import consumer_span, mark_failed
from .nats import NatsConnection
from .stopping import StopRequested, StopSignal

log = get_logger(__name__)
T = TypeVar("T")

# Returns False when the event had been handled before (a redelivery), True or None otherwise.
EventHandler = Callable[[Event], "bool | None"]

# Errors that will not go away by retrying the same message.
_PERMANENT_ERRORS = (InvalidEvent, InvalidInput, NotFound)

# How long one pull request stays open on the server. A stop waits at most this long (and the margin, for the
# request's trip to the server) before nak'ing, so that no request of ours is left open to take the redelivered
# messages back.
_FETCH_TIMEOUT_S = 1.0
_FETCH_MARGIN_S = 0.5
# How much longer than its deadline `stop` waits for a consumer before cancelling it (a loop that does not answer).
_STOP_BACKSTOP_S = _FETCH_TIMEOUT_S + _FETCH_MARGIN_S + 1.0
# How often a stopping consumer looks at its deadline while handlers finish.
_STOP_POLL_S = 0.1


class _Stopped:
    """What `_unless_stopping` returns when the stop came first."""


_STOPPED = _Stopped()


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
                 *, max_in_flight: int = 16, pending_report_interval: float = 5.0,
                 stopping: StopSignal | None = None) -> None:
        self._service = service
        self._nats = connection
        self._subscriptions = subscriptions
        self._max_in_flight = max_in_flight
        self._pending_report_interval = pending_report_interval
        # The process's signal (ServiceRuntime.stopping), which handlers wait through; a group of its own otherwise.
        self.stopping = stopping if stopping is not None else StopSignal()
        self._stop_event = asyncio.Event()  # the same news, on the loop; bound to it on first use
        self._deadline = math.inf  # time.monotonic() by which handlers still running are given up
        self._tasks: list[Future[None]] = []
        # Every outcome's series exists at 0 from start-up, so increase() counts the first rejected event too.
        for subscription in subscriptions:
            for outcome in metrics.EVENT_OUTCOMES:
                metrics.EVENTS_CONSUMED.labels(service, subscription.durable, outcome)

    def start(self) -> None:
        for subscription in self._subscriptions:
            self._tasks.append(
                asyncio.run_coroutine_threadsafe(self._consume_forever(subscription), self._nats.loop)
            )

    def is_alive(self) -> bool:
        return all(not task.done() for task in self._tasks)

    def begin_stop(self) -> None:
        """Stop fetching now, and have handlers whose work can be redone give way; returns at once."""
        self.stopping.request()
        try:
            self._nats.loop.call_soon_threadsafe(self._stop_event.set)
        except RuntimeError:
            pass  # the loop is closed: nothing runs on it any more

    def stop(self, timeout: float) -> None:
        """Stop fetching, let the handlers that cannot be redone finish and be acked within `timeout`, nak the
        rest for redelivery, then return."""
        self._deadline = min(self._deadline, time.monotonic() + max(0.0, timeout))
        self.begin_stop()
        for task in self._tasks:
            # The consumers keep their deadline themselves; this is a backstop should the loop not answer.
            try:
                task.result(timeout=max(0.1, self._deadline - time.monotonic()) + _STOP_BACKSTOP_S)
            except Exception as exc:  # unacked messages are redelivered to another instance
                log.warning("consumer_stop_incomplete", error=str(exc) or type(exc).__name__)
                task.cancel()

    # --- consuming ------------------------------------------------------------------------
    async def _unless_stopping(self, awaitable: Awaitable[T]) -> T | _Stopped:
        """The awaitable's result, or _STOPPED (the awaitable cancelled) if the stop comes first."""
        work = asyncio.ensure_future(awaitable)
        if not self._stop_event.is_set():
            stop = asyncio.ensure_future(self._stop_event.wait())
            try:
                await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
        if work.done():
            return work.result()
        work.cancel()
        try:
            await work
        except BaseException:  # noqa: BLE001 - cancelled, or failed while being cancelled: either way, stopped
            pass
        return _STOPPED

    async def _consume_forever(self, subscription: Subscription) -> None:
        delay = 0.2
        while not self.stopping.requested:
            try:
                pull = await self._unless_stopping(self._subscribe(subscription))
                if isinstance(pull, _Stopped):
                    return
                await self._consume(subscription, pull)
                return
            except Exception as exc:  # broker down or consumer deleted: subscribe again
                if self.stopping.requested:
                    return
                log.warning("consumer_subscribe_failed", durable=subscription.durable,
                            error=str(exc) or type(exc).__name__, retry_in_s=delay)
                await self._unless_stopping(asyncio.sleep(delay))
                delay = min(delay * 2, 5.0)

    async def _subscribe(self, subscription: Subscription) -> JetStreamContext.PullSubscription:
        while not self._nats.connected:
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
        try:
            # Creates the durable consumer, or brings the one a previous release made to this config (JetStream
            # changes what it lets change: subjects, ack wait, in-flight limit). pull_subscribe alone would bind to
            # the old config for ever: a subject added in a release would never be delivered.
            await self._nats.jetstream.add_consumer(subscription.stream.name, config=config)
        except BadRequestError as error:  # a change JetStream refuses on a live consumer (e.g. its deliver policy)
            log.error("consumer_config_not_applied", durable=subscription.durable, error=error.description)
        return await self._nats.jetstream.pull_subscribe(
            subscription.subjects[0] if len(subscription.subjects) == 1 else "",
            durable=subscription.durable,
            stream=subscription.stream.name,
            config=config,
        )

    async def _consume(self, subscription: Subscription, pull: JetStreamContext.PullSubscription) -> None:
        log.info("consumer_started", durable=subscription.durable, subjects=list(subscription.subjects))
        in_flight: set[asyncio.Task[None]] = set()
        untouched: list[Msg] = []  # fetched as the stop came: never handled, given back
        # When no pull request of ours can be open on the server any more (each expires with its fetch).
        quiet_at = [time.monotonic()]
        reporter = asyncio.ensure_future(self._report_pending(subscription))
        try:
            while not self.stopping.requested:
                free = self._max_in_flight - len(in_flight)
                if free <= 0:
                    await self._unless_stopping(asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED))
                    continue
                quiet_at[0] = time.monotonic() + _FETCH_TIMEOUT_S + _FETCH_MARGIN_S
                try:
                    messages = await self._unless_stopping(pull.fetch(free, timeout=_FETCH_TIMEOUT_S))
                except (NatsTimeoutError, asyncio.TimeoutError):
                    continue
                if isinstance(messages, _Stopped):
                    break
                if self.stopping.requested:
                    untouched.extend(messages)
                    break
                for message in messages:
                    task = asyncio.ensure_future(self._handle(subscription, message, quiet_at))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
        finally:
            reporter.cancel()
            await self._wind_down(subscription, pull, in_flight, untouched, quiet_at[0])

    async def _wind_down(self, subscription: Subscription, pull: JetStreamContext.PullSubscription,
                         in_flight: set[asyncio.Task[None]], untouched: list[Msg], quiet_at: float) -> None:
        """Stopping (or a broken subscription): what was taken finishes and is acked until the deadline; what is
        still running then is given up and nak'ed, as are messages delivered after fetching stopped."""
        while in_flight and time.monotonic() < self._deadline:
            await asyncio.wait(set(in_flight), timeout=min(_STOP_POLL_S, self._deadline - time.monotonic()))
        for task in list(in_flight):
            task.cancel()  # the handler goes on in its thread, unobserved; its message is nak'ed
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        if self.stopping.requested:
            await _sleep_until(min(quiet_at, self._deadline))
            untouched.extend(await _delivered_after_stop(pull))
            for message in untouched:
                try:
                    await message.nak()
                except Exception:
                    pass  # not acked: the server redelivers after the ack wait anyway
                metrics.EVENTS_CONSUMED.labels(self._service, subscription.durable, "abandoned").inc()
            log.info("consumer_stopped", durable=subscription.durable, given_back=len(untouched))
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

    async def _handle(self, subscription: Subscription, message: Msg, quiet_at: list[float]) -> None:
        # Each message is handled in its own task, so the bound context is this message's alone.
        with request_scope(presented_in(message.headers)), \
                bound_contextvars(consumer=subscription.durable, subject=message.subject), \
                consumer_span(message.subject, subscription.durable, message.headers) as span:
            outcome = await self._handle_in_context(subscription, message, quiet_at)
            if outcome in ("rejected", "retried"):
                mark_failed(span, outcome)

    async def _handle_in_context(self, subscription: Subscription, message: Msg, quiet_at: list[float]) -> str:
        """Handle one message; returns its outcome (as counted in EVENTS_CONSUMED)."""
        started = time.perf_counter()
        consumer = subscription.durable
        outcome = "processed"
        try:
            event = Event.decode(message.subject, message.data)
        except InvalidEvent as exc:
            log.error("event_rejected", error=str(exc))
            await message.term()
            self._record(consumer, "rejected", started)
            return "rejected"
        context = contextvars.copy_context()
        context.run(bind_contextvars, event_id=event.event_id)
        if event.request_id and not presented_in(message.headers):
            # No header (a publisher without one): the payload's request id still joins the lines up.
            context.run(adopt_request_id, event.request_id)

        def run_handler() -> bool | None:
            return context.run(subscription.handler, event)

        handled = _in_thread(run_handler, f"consumer-{consumer}")
        try:
            if await self._wait_marking_progress(message, handled, subscription.ack_wait_s) is False:
                outcome = "duplicate"
            await message.ack()
        except StopRequested:
            outcome = "abandoned"
            log.info("event_abandoned", event_id=event.event_id, reason="the process is stopping")
            await self._give_back(message, quiet_at[0])
        except asyncio.CancelledError:
            # The stop's deadline passed with the handler still running (or the loop is shutting down).
            handled.cancel()  # whatever the handler comes to is nobody's news now
            self._record(consumer, "abandoned", started)
            log.warning("event_abandoned", event_id=event.event_id, reason="still being handled at the stop deadline")
            await self._give_back(message, quiet_at[0])
            raise
        except RetryLater as exc:
            outcome = "deferred"
            log.info("event_deferred", event_id=event.event_id, reason=exc.reason, retry_in_s=exc.delay_s)
            try:
                await message.nak(delay=exc.delay_s)
            except Exception:
                pass  # not acked: the server redelivers after ack_wait anyway
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
        return outcome

    async def _give_back(self, message: Msg, quiet_at: float) -> None:
        """Nak for redelivery now, once no pull request of ours is left to take the message straight back."""
        try:
            await _sleep_until(min(quiet_at, self._deadline))
            await message.nak()
        except Exception:
            pass  # not acked: the server redelivers after the ack wait anyway

    def _record(self, consumer: str, outcome: str, started: float) -> None:
        metrics.EVENTS_CONSUMED.labels(self._service, consumer, outcome).inc()
        metrics.EVENT_HANDLING_DURATION.labels(self._service, consumer).observe(time.perf_counter() - started)


def _in_thread(function: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run `function` in a daemon thread of its own: a handler still running when the process exits (given up at
    the stop deadline) does not keep it alive, as a thread pool's threads would."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return  # given up already
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = function(), None
        except BaseException as exc:  # noqa: BLE001 - reported to the waiting task, whatever it is
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop is closed: the message was given up and nobody waits for this any more

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _delivered_after_stop(pull: JetStreamContext.PullSubscription) -> list[Msg]:
    """Messages the server delivered to this subscription for a pull request still open when fetching stopped
    (they wait in the subscription's queue; status messages are dropped)."""
    messages: list[Msg] = []
    subscription = getattr(pull, "_sub", None)  # nats-py keeps them in the pull subscription's inbox
    while subscription is not None and pull.pending_msgs > 0:
        try:
            message = await subscription.next_msg(timeout=0.05)
        except Exception:
            break
        if not JetStreamContext.is_status_msg(message):
            messages.append(message)
    return messages
