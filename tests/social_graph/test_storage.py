"""The social-graph schema on its own: the database refuses what the domain refuses, and both
directions' pages are served by an index."""
from __future__ import annotations

import psycopg2
import psycopg2.errors
import pytest
from delinkcious.kit.postgres.db import build_dsn
from delinkcious.social_graph.app import DEFINITION


@pytest.fixture
def cursor(service_environment):
    access = service_environment.database(DEFINITION)
    connection = psycopg2.connect(build_dsn(access.dsn, access.read_password()))
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.rollback()
        connection.close()


@pytest.mark.parametrize("follower,followed", [
    ("ann", "ann"), ("Ann", "bob"), ("ann", "b--b"), ("-ann", "bob"), ("ann", "b" * 40), ("", "bob"),
])
def test_the_database_refuses_self_follows_and_malformed_names(cursor, follower, followed):
    cursor.execute("SAVEPOINT attempt")
    with pytest.raises(psycopg2.errors.CheckViolation):
        cursor.execute("INSERT INTO follows (follower, followed, created_at) VALUES (%s, %s, now())",
                       (follower, followed))
    cursor.execute("ROLLBACK TO SAVEPOINT attempt")
    with pytest.raises(psycopg2.errors.CheckViolation):
        cursor.execute("INSERT INTO known_users (username, known_since) VALUES ('Not_Valid', now())")


def test_one_edge_per_pair(cursor):
    cursor.execute("INSERT INTO follows (follower, followed, created_at) VALUES ('x-1', 'y-2', now())")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        cursor.execute("INSERT INTO follows (follower, followed, created_at) VALUES ('x-1', 'y-2', now())")


@pytest.mark.parametrize("column,index", [("follower", "follows_following_page_idx"),
                                          ("followed", "follows_followers_page_idx")])
def test_both_directions_pages_are_served_by_an_index(cursor, column, index):
    cursor.execute("SET enable_seqscan = off")  # tiny test tables would make any plan a seq scan
    cursor.execute(f"EXPLAIN SELECT id, follower, followed, created_at FROM follows WHERE {column} = 'ann' "
                   "AND id < 100 ORDER BY id DESC LIMIT 101")
    plan = "\n".join(row[0] for row in cursor.fetchall())
    assert index in plan and "Sort" not in plan
