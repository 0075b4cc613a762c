"""The transactional outbox and its relay, against real PostgreSQL and a NATS server this test
stops and starts."""
from __future__ import annotations

import time
import uuid

import pytest
from delinkcious.contracts.events import LINK_ADDED, LINKS_STREAM, Event
from delinkcious.kit.messaging.nats import NatsConnection
from delinkcious.kit.messaging.outbox import OutboxRelay
from delinkcious.kit.postgres.db import Database, build_dsn
from delinkcious.kit.postgres.unit_of_work import record_event
from delinkcious.link.app import DEFINITION
from prometheus_client import REGISTRY

from tests.support.jetstream import read_events, wait_for_events, wait_until
from tests.support.services import unique_username


@pytest.fixture
def link_database(service_environment):
    access = service_environment.database(DEFINITION)
    database = Database(build_dsn(access.dsn, access.read_password()), pool_size=4)
    yield database
    database.close()


@pytest.fixture
def relay_parts(link_database, nats_url):
    connection = NatsConnection(nats_url, "outbox-test", streams=[LINKS_STREAM])
    connection.start()
    assert wait_until(lambda: connection.ready)
    yield link_database, connection, OutboxRelay("test", link_database, connection, poll_interval=3600)
    connection.close()


def test_events_written_while_nats_is_down_arrive_once_it_is_back(service_environment, private_nats):
    user = unique_username()
    with service_environment.running(DEFINITION, nats_url=private_nats.url) as (runtime, app):
        client = app.test_client()
        headers = service_environment.caller_headers()
        assert wait_until(lambda: runtime.nats.ready)
        assert client.post(f"/v1/users/{user}/links", json={"url": "https://before.example", "title": "t"},
                           headers=headers).status_code == 201
        private_nats.stop()
        for index in range(15):
            response = client.post(f"/v1/users/{user}/links",
                                   json={"url": f"https://during.example/{index}", "title": "t"}, headers=headers)
            assert response.status_code == 201  # writes stay available: the outbox holds the events
        readiness = client.get("/healthz/readiness")
        body = readiness.get_json()
        checks = {check["name"]: check for check in body["checks"]}
        assert readiness.status_code == 200 and body["status"] == "degraded"
        assert checks["nats"]["ok"] is False and checks["outbox"]["detail"]["pending_events"] >= 15

        private_nats.start()
        events = wait_for_events(private_nats.url, LINKS_STREAM.name, LINK_ADDED, 16, timeout=30, author=user)
        assert len(events) == 16
        assert len({event["event_id"] for event in events}) == 16
        assert {event["url"] for event in events} == {"https://before.example"} | {
            f"https://during.example/{index}" for index in range(15)}
        assert wait_until(lambda: runtime.outbox.stats()["pending_events"] == 0)
        assert wait_until(lambda: client.get("/healthz/readiness").get_json()["status"] == "ready", timeout=10)


def test_relay_publishes_rows_committed_by_other_processes_and_drains_on_stop(relay_parts, nats_url):
    """Rows written by someone else (no wake-up) wait for the poll; stop_and_drain publishes them."""
    database, _connection, relay = relay_parts
    relay.start()
    author = unique_username()
    events = [Event(subject=LINK_ADDED, event_type="link_added", author=author, data={"url": f"https://x/{i}"})
              for i in range(5)]
    with database.transaction() as cursor:
        for event in events:
            record_event(cursor, event)
    assert relay.stop_and_drain(timeout=10) == 0
    published = wait_for_events(nats_url, LINKS_STREAM.name, LINK_ADDED, 5, author=author)
    assert [event["event_id"] for event in published] == [event.event_id for event in events]


def test_rolled_back_writes_publish_nothing_and_republishing_is_deduplicated(relay_parts, nats_url):
    database, _connection, relay = relay_parts
    author = unique_username()
    with pytest.raises(RuntimeError):
        with database.transaction() as cursor:
            record_event(cursor, Event(subject=LINK_ADDED, event_type="link_added", author=author, data={}))
            raise RuntimeError("the state change failed")
    kept = Event(subject=LINK_ADDED, event_type="link_added", author=author, data={})
    with database.transaction() as cursor:
        record_event(cursor, kept)
    assert relay.publish_pending() >= 1
    # A relay that crashed after publishing but before marking the row sent publishes it again:
    # JetStream drops the repeat because the message id is the event id.
    with database.transaction() as cursor:
        cursor.execute("UPDATE outbox SET published_at = NULL WHERE event_id = %s", (kept.event_id,))
    assert relay.publish_pending() >= 1
    events = [event for event in read_events(nats_url, LINKS_STREAM.name, LINK_ADDED) if event["author"] == author]
    assert [event["event_id"] for event in events] == [kept.event_id]


def test_event_envelope_round_trip():
    event = Event(subject=LINK_ADDED, event_type="link_added", author="ann", data={"url": "https://e"},
                  request_id="r1")
    decoded = Event.decode(LINK_ADDED, event.encode())
    assert decoded == event
    assert event.payload()["occurred_at"].endswith("Z")
    assert uuid.UUID(event.event_id)


def test_only_committed_transactions_that_wrote_events_wake_the_relay(service_environment):
    author = unique_username()

    def event() -> Event:
        return Event(subject=LINK_ADDED, event_type="link_added", author=author, data={"url": "https://woken.example"})

    with service_environment.running(DEFINITION) as (runtime, _app):
        relay = runtime.outbox
        assert wait_until(lambda: runtime.nats.ready)
        before = relay.notifications
        with runtime.transaction() as cursor:
            cursor.execute("SELECT count(*) FROM outbox")
        with runtime.transaction() as cursor:
            cursor.execute("DELETE FROM links WHERE false")  # a write that changed nothing and recorded no event
        with pytest.raises(RuntimeError):
            with runtime.transaction() as cursor:
                record_event(cursor, event())
                raise RuntimeError("the state change failed")
        assert relay.notifications == before  # reads, event-less and rolled-back transactions leave it asleep

        committed = event()
        with runtime.transaction() as cursor:
            record_event(cursor, committed)
        assert relay.notifications == before + 1
        assert wait_until(lambda: runtime.outbox.stats()["pending_events"] == 0)
        published = wait_for_events(service_environment.nats_url, LINKS_STREAM.name, LINK_ADDED, 1, author=author)
        assert [published_event["event_id"] for published_event in published] == [committed.event_id]


def test_while_the_broker_is_down_commits_do_not_cut_the_back_off_short(link_database, private_nats):
    """Every commit that wrote an event wakes the relay; while NATS is down each attempt fails at once, so a wake-up
    per commit would be an attempt (and a transaction) per write. It backs off (0.4, 0.8, 1.6 s ...) and the
    broker's return, not the next commit, ends the wait."""
    connection = NatsConnection(private_nats.url, "outbox-backoff-test", streams=[LINKS_STREAM])
    connection.start()
    relay = OutboxRelay("backoff-test", link_database, connection, poll_interval=3600)
    author = unique_username()
    try:
        assert wait_until(lambda: connection.ready)
        private_nats.stop()
        assert wait_until(lambda: not connection.connected)
        relay.start()
        with link_database.transaction() as cursor:
            record_event(cursor, Event(subject=LINK_ADDED, event_type="link_added", author=author,
                                       data={"url": "https://held.example/"}))

        def failed_attempts() -> float:
            return REGISTRY.get_sample_value("delinkcious_outbox_publish_failures_total",
                                             {"service": "backoff-test"}) or 0.0

        before = failed_attempts()
        for _ in range(40):  # two seconds of commits
            relay.notify()
            time.sleep(0.05)
        assert failed_attempts() - before <= 5
        private_nats.start()
        assert wait_for_events(private_nats.url, LINKS_STREAM.name, LINK_ADDED, 1, timeout=30, author=author)
    finally:
        relay.stop_and_drain(timeout=5)
        connection.close()


def test_a_nats_reconnect_wakes_the_relay(link_database, private_nats):
    connection = NatsConnection(private_nats.url, "outbox-reconnect-test", streams=[LINKS_STREAM])
    connection.start()
    try:
        relay = OutboxRelay("test", link_database, connection, poll_interval=3600)
        assert wait_until(lambda: connection.ready)
        before = relay.notifications
        private_nats.stop()
        assert wait_until(lambda: not connection.connected)
        private_nats.start()
        assert wait_until(lambda: relay.notifications > before, timeout=30)
    finally:
        connection.close()


def test_the_relay_publishes_on_a_warm_pooled_session(relay_parts):
    database, _connection, relay = relay_parts
    author = unique_username()
    sessions = set()
    for index in range(5):
        with database.transaction() as cursor:
            record_event(cursor, Event(subject=LINK_ADDED, event_type="link_added", author=author,
                                       data={"url": f"https://warm/{index}"}))
        assert relay.publish_pending() >= 1
        with database.transaction() as cursor:
            cursor.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            row = cursor.fetchone()
            sessions.add((row["pid"], row["backend_start"]))
    assert len(sessions) == 1  # writes, publishing and reads shared one server session, opened once
