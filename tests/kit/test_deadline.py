"""A caller's timeout travels with its request (Delinkcious-Timeout-Ms), and a write whose caller has given up is
rolled back instead of committed: when the database stalls mid-request, the caller's 503 means "not written",
never "written behind your back" (the fault suite found adds stored after their 503 while PostgreSQL was frozen)."""
from __future__ import annotations

import threading
import time
from typing import Any

import psycopg2
import pytest
from delinkcious.kit.core.deadline import caller_gave_up, remaining, reset_deadline, set_deadline
from delinkcious.kit.core.errors import Unavailable
from delinkcious.kit.observability.context import TIMEOUT_HEADER, enter_deadline, leave_deadline, outgoing_headers
from delinkcious.kit.postgres.db import Database, build_dsn
from delinkcious.link.app import DEFINITION

from tests.support.services import unique_username


@pytest.mark.parametrize(("presented", "expected"), [
    ("1500", 1.5), ("1", 0.001), (None, None), ("", None), ("soon", None), ("0", None), ("-5", None),
    (str(24 * 3600 * 1000), None),
])
def test_the_callers_timeout_is_read_from_its_header(presented, expected):
    token = enter_deadline(presented)
    try:
        left = remaining()
        assert left == expected if expected is None else 0 < expected - left < 0.05
    finally:
        leave_deadline(token)
    assert remaining() is None


def test_an_outgoing_call_waits_no_longer_than_its_own_caller():
    assert TIMEOUT_HEADER not in outgoing_headers()
    assert outgoing_headers(5.0)[TIMEOUT_HEADER] == "5000"
    token = set_deadline(0.8)
    try:
        assert 700 < int(outgoing_headers(5.0)[TIMEOUT_HEADER]) <= 800
        assert 700 < int(outgoing_headers()[TIMEOUT_HEADER]) <= 800
        assert outgoing_headers(0.2)[TIMEOUT_HEADER] == "200"
    finally:
        reset_deadline(token)


@pytest.fixture
def database(service_environment) -> Any:
    access = service_environment.database(DEFINITION)
    database = Database(build_dsn(access.dsn, access.read_password()))
    with database.transaction() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS deadline_probe (name text PRIMARY KEY)")
    yield database
    database.close()


def stored(database: Database, name: str) -> bool:
    with database.transaction() as cursor:
        cursor.execute("SELECT 1 FROM deadline_probe WHERE name = %s", (name,))
        return cursor.fetchone() is not None


def test_a_transaction_whose_caller_gave_up_is_rolled_back(database):
    late, in_time, unhurried = (unique_username() for _ in range(3))
    token = set_deadline(0.05)
    try:
        with pytest.raises(Unavailable, match="stopped waiting"), database.transaction() as cursor:
            cursor.execute("INSERT INTO deadline_probe VALUES (%s)", (late,))
            time.sleep(0.1)
        assert caller_gave_up()
    finally:
        reset_deadline(token)
    token = set_deadline(5)
    try:
        with database.transaction() as cursor:
            cursor.execute("INSERT INTO deadline_probe VALUES (%s)", (in_time,))
    finally:
        reset_deadline(token)
    with database.transaction() as cursor:  # no caller waiting (an event's handler): no deadline
        cursor.execute("INSERT INTO deadline_probe VALUES (%s)", (unhurried,))
    assert (stored(database, late), stored(database, in_time), stored(database, unhurried)) == (False, True, True)


def test_an_add_stalled_past_its_callers_timeout_is_not_written(service_environment, postgres_admin_dsn):
    """The links table is locked (as a stalled server would hold the insert) past the caller's 300 ms; once it is
    free the insert goes through, but the commit is refused: 503, and the link is not there."""
    user = unique_username()
    access = service_environment.database(DEFINITION)
    with service_environment.running(DEFINITION) as (_runtime, app):
        client = app.test_client()
        headers = service_environment.caller_headers()
        locker = psycopg2.connect(build_dsn(access.dsn, access.read_password()))
        answers: list[Any] = []
        try:
            with locker.cursor() as cursor:
                cursor.execute("LOCK TABLE links IN ACCESS EXCLUSIVE MODE")
            adding = threading.Thread(target=lambda: answers.append(client.post(
                f"/v1/users/{user}/links", json={"url": "https://late.example/", "title": "late"},
                headers={**headers, TIMEOUT_HEADER: "300"})))
            adding.start()
            time.sleep(0.8)
        finally:
            locker.rollback()
            locker.close()
        adding.join(10)
        listed = client.get(f"/v1/users/{user}/links", headers=headers)
    assert answers[0].status_code == 503, answers[0].get_json()
    assert answers[0].get_json()["code"] == "unavailable"
    assert listed.get_json()["links"] == []
