"""The kit's PostgreSQL pool against real PostgreSQL, seen from PostgreSQL's side (pg_stat_activity):
connections are reused rather than opened per transaction, never more than the pool's size, replaced
when the server drops them, waited for (bounded) when all are busy; and reads do not wake the outbox relay."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from delinkcious.kit.core.errors import Unavailable
from delinkcious.kit.postgres.db import Database, build_dsn
from delinkcious.link.app import DEFINITION

from tests.support.jetstream import wait_until
from tests.support.services import unique_username
from tests.support.threads import raised_together

Session = tuple[int, Any]  # (backend pid, backend_start): a pid alone may be reused by a later session


@pytest.fixture
def admin(postgres_admin_dsn: str) -> Iterator[Any]:
    """The test's own view of the server, outside any pool under test."""
    connection = psycopg2.connect(postgres_admin_dsn)
    connection.autocommit = True
    yield connection
    connection.close()


@pytest.fixture
def make_database(service_environment) -> Iterator[Any]:
    """Pools on the link service's database, each with an application_name of its own to find its sessions by."""
    access = service_environment.database(DEFINITION)
    opened: list[Database] = []

    def make(**options: Any) -> Database:
        name = f"pool-test-{uuid.uuid4().hex[:10]}"
        database = Database(build_dsn(access.dsn, access.read_password()), application_name=name, **options)
        database.application_name = name  # for the test's look-ups only
        opened.append(database)
        return database

    yield make
    for database in opened:
        database.close()


def sessions(admin: Any, application_name: str, started_after: Any = None) -> set[Session]:
    with admin.cursor() as cursor:
        cursor.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s "
                       "AND backend_start > COALESCE(%s, '-infinity'::timestamptz)", (application_name, started_after))
        return set(cursor.fetchall())


def server_clock(admin: Any) -> Any:
    with admin.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def own_session(database: Database) -> Session:
    """The server session the transaction ran in."""
    with database.transaction() as cursor:
        cursor.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        row = cursor.fetchone()
    return row["pid"], row["backend_start"]


def terminate(admin: Any, session: Session) -> None:
    """Kill the session server-side, as a restart or an administrator would, and wait until it has gone."""
    pid, backend_start = session

    def gone() -> bool:
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND backend_start = %s", session)
            return cursor.fetchone() is None

    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert wait_until(gone)


def test_sequential_transactions_reuse_one_session(make_database, admin):
    database = make_database(pool_size=4)
    assert sessions(admin, database.application_name) == set()  # nothing is opened before it is needed
    used = {own_session(database) for _ in range(25)}
    assert len(used) == 1
    assert sessions(admin, database.application_name) == used  # kept open, warm, for the next transaction


def test_concurrent_transactions_never_open_more_sessions_than_the_pool_size(make_database, admin):
    pool_size, workers = 3, 9
    database = make_database(pool_size=pool_size, acquire_timeout=60)
    # Each generation of the barrier is pool_size transactions holding their connections at once, while the
    # other workers wait for one of them; one transaction per worker, so every generation fills.
    all_connections_busy = threading.Barrier(pool_size, timeout=60)
    seen_at_once: list[int] = []
    used: set[Session] = set()

    def work() -> None:
        with database.transaction() as cursor:
            cursor.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            row = cursor.fetchone()
            used.add((row["pid"], row["backend_start"]))
            all_connections_busy.wait()
            cursor.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = %s",
                           (database.application_name,))
            seen_at_once.append(cursor.fetchone()["n"])

    assert workers % pool_size == 0
    assert raised_together([work] * workers) == []
    assert len(seen_at_once) == workers
    assert max(seen_at_once) == pool_size
    assert len(used) == pool_size  # the later workers got the first ones' connections
    assert sessions(admin, database.application_name) == used


def test_a_session_killed_by_the_server_is_replaced(make_database, admin):
    database = make_database(pool_size=2)
    killed = own_session(database)
    terminate(admin, killed)

    outcomes: list[Session | Unavailable] = []
    for _ in range(2):
        try:
            outcomes.append(own_session(database))
        except Unavailable as exc:  # the transaction that meets the dead connection may fail; it is then dropped
            outcomes.append(exc)
    replacement = outcomes[-1]
    assert isinstance(replacement, tuple) and replacement != killed
    assert killed not in outcomes
    assert own_session(database) == replacement
    assert sessions(admin, database.application_name) == {replacement}


def test_each_dead_connection_is_handed_out_at_most_once(make_database, admin):
    """After a server restart every idle connection is dead; none of them may fail two requests."""
    pool_size = 3
    database = make_database(pool_size=pool_size, acquire_timeout=60)
    all_connections_busy = threading.Barrier(pool_size, timeout=60)

    def hold_one() -> None:
        with database.transaction() as cursor:
            cursor.execute("SELECT 1")
            all_connections_busy.wait()

    assert raised_together([hold_one] * pool_size) == []
    warm = sessions(admin, database.application_name)
    assert len(warm) == pool_size
    for session in warm:
        terminate(admin, session)

    for _ in range(pool_size):
        try:
            own_session(database)
        except Unavailable:
            pass  # met a dead connection, which is dropped
    # pool_size attempts have met each dead connection at most once and dropped it: this one must work.
    after = own_session(database)
    assert after not in warm
    assert sessions(admin, database.application_name) & warm == set()


def test_a_transaction_waits_for_a_free_connection_then_gets_a_warm_one(make_database):
    database = make_database(pool_size=1, acquire_timeout=60)
    holding = threading.Event()
    release = threading.Event()
    holder_session: list[Session] = []

    def hold() -> None:
        with database.transaction() as cursor:
            cursor.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            row = cursor.fetchone()
            holder_session.append((row["pid"], row["backend_start"]))
            holding.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(60)
    waiter_session: list[Session] = []
    waiter = threading.Thread(target=lambda: waiter_session.append(own_session(database)))
    waiter.start()
    release.set()
    holder.join()
    waiter.join()
    assert waiter_session == holder_session  # it waited for the one connection instead of failing or opening another


def test_an_exhausted_pool_answers_unavailable_with_retry_after(make_database, admin):
    database = make_database(pool_size=1, acquire_timeout=0.2)
    with database.connection():
        with pytest.raises(Unavailable) as raised:
            with database.transaction():
                pass
    assert raised.value.status == 503 and raised.value.retry_after == 1
    own_session(database)  # the connection is free again
    assert len(sessions(admin, database.application_name)) == 1


def test_close_closes_every_session(make_database, admin):
    database = make_database(pool_size=2)
    own_session(database)
    assert sessions(admin, database.application_name)
    database.close()
    assert wait_until(lambda: not sessions(admin, database.application_name))
    with pytest.raises(Unavailable):
        own_session(database)


def test_reads_do_not_wake_the_outbox_relay_and_reuse_warm_sessions(service_environment, admin):
    user = unique_username()
    path = f"/v1/users/{user}/links"
    pool_size = 3
    started = server_clock(admin)  # sessions of earlier link runtimes (still ending) are older than this

    def link_sessions() -> set[Session]:
        return sessions(admin, DEFINITION.name, started_after=started)

    with service_environment.running(DEFINITION, db_pool_size=pool_size) as (runtime, app):
        client = app.test_client()
        headers = service_environment.caller_headers()
        assert wait_until(lambda: runtime.nats.ready)
        assert client.get(path, headers=headers).status_code == 200
        warm = link_sessions()
        assert warm  # the GET's session stayed open
        notified = runtime.outbox.notifications

        for _ in range(20):
            assert client.get(path, headers=headers).status_code == 200
        assert runtime.outbox.notifications == notified  # reads never wake the relay
        after_reads = link_sessions()
        assert warm <= after_reads and len(after_reads) <= pool_size  # no new session per request

        created = client.post(path, json={"url": "https://woken.example", "title": "t"}, headers=headers)
        assert created.status_code == 201
        assert runtime.outbox.notifications == notified + 1  # the write's commit woke it, once
        assert wait_until(lambda: runtime.outbox.stats()["pending_events"] == 0)
        assert warm <= link_sessions() and len(link_sessions()) <= pool_size  # the relay used pooled sessions
