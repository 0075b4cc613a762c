"""The kit's consumers: slow handlers keep their messages, one slow message does not hold up the
others, and each durable consumer's backlog is reported as a gauge."""
from __future__ import annotations

import threading
import time
import uuid

from delinkcious.contracts.events import Event, StreamSpec
from delinkcious.kit.core.clock import format_timestamp, utc_now
from delinkcious.kit.messaging.consumer import ConsumerGroup, Subscription
from delinkcious.kit.messaging.nats import NatsConnection
from prometheus_client import REGISTRY

from tests.support.jetstream import publish_event, wait_until


def fresh_stream() -> tuple[StreamSpec, str]:
    name = uuid.uuid4().hex[:10]
    return StreamSpec(f"KIT_TEST_{name.upper()}", (f"kittest.{name}.>",), max_age_days=0.01), f"kittest.{name}.done"


def event(number: int) -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "event_type": "done", "author": "test",
            "occurred_at": format_timestamp(utc_now()), "number": number}


def test_a_handler_slower_than_ack_wait_keeps_its_message(nats_url):
    stream, subject = fresh_stream()
    calls: list[int] = []

    def slow(handled: Event) -> None:
        calls.append(int(handled.data["number"]))
        time.sleep(2.5)

    connection = NatsConnection(nats_url, client_name="kit-test", streams=[stream])
    connection.start()
    assert wait_until(lambda: connection.ready)
    publish_event(nats_url, subject, event(1))
    group = ConsumerGroup("kit-test", connection, [Subscription(stream, (subject,), "kit-slow", slow, ack_wait_s=1.0)],
                          max_in_flight=2)
    group.start()
    try:
        assert wait_until(lambda: calls == [1], timeout=10)
        time.sleep(3.5)  # without progress reports, it would be redelivered every second
        assert calls == [1]
    finally:
        group.stop(timeout=10)
        connection.close(timeout=5)


def test_one_slow_message_does_not_hold_up_the_others(nats_url):
    stream, subject = fresh_stream()
    finished: list[tuple[int, float]] = []
    release = threading.Event()

    def handler(handled: Event) -> None:
        number = int(handled.data["number"])
        if number == 0:
            release.wait(10)
        finished.append((number, time.monotonic()))

    connection = NatsConnection(nats_url, client_name="kit-test", streams=[stream])
    connection.start()
    assert wait_until(lambda: connection.ready)
    publish_event(nats_url, subject, event(0))
    group = ConsumerGroup("kit-test", connection, [Subscription(stream, (subject,), "kit-hol", handler)],
                          max_in_flight=2)
    group.start()
    try:
        time.sleep(0.5)  # the slow one is in flight
        for number in range(1, 7):
            publish_event(nats_url, subject, event(number))
        # Six more pass through the one free slot while the first is still being handled.
        assert wait_until(lambda: len(finished) == 6, timeout=10), finished
        assert 0 not in [number for number, _ in finished]
        release.set()
        assert wait_until(lambda: len(finished) == 7)
    finally:
        release.set()
        group.stop(timeout=10)
        connection.close(timeout=5)


def test_the_backlog_of_a_durable_consumer_is_a_gauge(nats_url):
    stream, subject = fresh_stream()
    gate = threading.Event()
    durable = f"kit-lag-{uuid.uuid4().hex[:6]}"

    def pending() -> float | None:
        return REGISTRY.get_sample_value("delinkcious_consumer_pending_messages",
                                         {"service": "kit-test", "consumer": durable})

    connection = NatsConnection(nats_url, client_name="kit-test", streams=[stream])
    connection.start()
    assert wait_until(lambda: connection.ready)
    for number in range(5):
        publish_event(nats_url, subject, event(number))
    group = ConsumerGroup("kit-test", connection,
                          [Subscription(stream, (subject,), durable, lambda _event: gate.wait(10))],
                          max_in_flight=2, pending_report_interval=0.2)
    group.start()
    try:
        assert wait_until(lambda: pending() == 5)  # 3 waiting + 2 delivered, unacknowledged
        gate.set()
        assert wait_until(lambda: pending() == 0)
    finally:
        gate.set()
        group.stop(timeout=10)
        connection.close(timeout=5)


def test_a_handler_asking_for_its_message_later_gets_it_back_after_that_delay(nats_url):
    """RetryLater is not a failure: the message is nak'ed with the handler's delay and counted `deferred`."""
    from delinkcious.kit.core.errors import RetryLater

    stream, subject = fresh_stream()
    seen: list[float] = []

    def paused_once(handled: Event) -> None:
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise RetryLater("paused for a moment", 1.5)

    connection = NatsConnection(nats_url, client_name="kit-test", streams=[stream])
    connection.start()
    assert wait_until(lambda: connection.ready)
    publish_event(nats_url, subject, event(1))
    group = ConsumerGroup("kit-test", connection, [Subscription(stream, (subject,), "kit-later", paused_once)],
                          max_in_flight=2)
    group.start()
    try:
        assert wait_until(lambda: len(seen) == 2, timeout=10), seen
        assert 1.3 <= seen[1] - seen[0] < 5.0, seen  # the handler's delay, not the failure back-off's 1 s
        deferred = REGISTRY.get_sample_value("delinkcious_events_consumed_total",
                                             {"service": "kit-test", "consumer": "kit-later", "outcome": "deferred"})
        assert deferred == 1.0
    finally:
        group.stop(timeout=10)
        connection.close(timeout=5)


def test_a_deployed_consumer_takes_its_new_subjects_and_settings(nats_url):
    """A new release subscribes its durable consumer to one more subject (and with another ack wait): the consumer
    already on the server is brought to that config, not left as the last release made it (so the new subject's
    events would never arrive)."""
    stream, first_subject = fresh_stream()
    second_subject = first_subject.replace(".done", ".also")
    handled: list[int] = []

    def handler(event_handled: Event) -> None:
        handled.append(int(event_handled.data["number"]))

    connection = NatsConnection(nats_url, client_name="kit-test", streams=[stream])
    connection.start()
    try:
        assert wait_until(lambda: connection.ready)
        durable = f"kit-upgrade-{uuid.uuid4().hex[:6]}"
        before = ConsumerGroup("kit-test", connection, [Subscription(stream, (first_subject,), durable, handler)])
        before.start()
        publish_event(nats_url, first_subject, event(1))
        assert wait_until(lambda: handled == [1], timeout=10)
        before.stop(timeout=10)

        after = ConsumerGroup("kit-test", connection, [
            Subscription(stream, (first_subject, second_subject), durable, handler, ack_wait_s=7.0)])
        after.start()
        try:
            publish_event(nats_url, second_subject, event(2))
            assert wait_until(lambda: handled == [1, 2], timeout=10), handled
            info = connection.run(connection.jetstream.consumer_info(stream.name, durable))
            assert sorted(info.config.filter_subjects or [info.config.filter_subject]) == sorted(
                [first_subject, second_subject])
            assert info.config.ack_wait == 7.0
        finally:
            after.stop(timeout=10)
    finally:
        connection.close(timeout=5)
