"""The plan of a page of following / followers, on a table big and skewed enough for the planner to have a choice.

PostgreSQL costs a page as if each user's edges were spread evenly over the table. With `followed = %s ...
ORDER BY id DESC` that made it walk follows_pkey backwards for a user whose edges are older than nearly
everyone else's, filtering out every newer edge (800,000 here); a page must walk the direction's
(user, id DESC) index whatever the data. The table is loaded in a database of this module's own, dropped at
the end."""
from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest
from delinkcious.social_graph.app import DEFINITION
from delinkcious.social_graph.repository import PostgresFollowRepository

from tests.support.query_plans import loaded_database, plan_nodes, rolled_back_cursor

CELEBRITY = "celebrity"  # 300,000 followers: the oldest edges of all
COLLECTOR = "collector"  # follows 300,000 users: the next oldest edges
SMALL = "small"  # follows 1,000 users and has 1,000 followers
NEWCOMER = "newcomer"  # follows 20 users and has 20 followers: fewer than a page
# ...and 497,960 edges from ~1,000 users (a-N, z-N) to ~2,000 users (b-N, y-N), of which these are two with
# 500 and ~330. Names on both sides of the others' in sort order keep the planner from crediting the
# per-user indexes with a heap order they do not have.
TYPICAL_FOLLOWER, TYPICAL_FOLLOWED = "z-7", "y-7"
_LOAD = """
    INSERT INTO follows (follower, followed, created_at)
    SELECT CASE WHEN n <= 300000 THEN 'fan-' || n WHEN n <= 600000 THEN 'collector'
                WHEN n % 500 = 1 THEN 'small' WHEN n % 500 = 2 THEN 'fan-' || n
                WHEN n % 25000 = 3 THEN 'newcomer' WHEN n % 25000 = 4 THEN 'fan-' || n
                ELSE CASE WHEN n % 2 = 0 THEN 'a-' ELSE 'z-' END || n % 1000 END,
           CASE WHEN n <= 300000 THEN 'celebrity' WHEN n <= 600000 THEN 'star-' || n
                WHEN n % 500 = 1 THEN 'star-' || n WHEN n % 500 = 2 THEN 'small'
                WHEN n % 25000 = 3 THEN 'star-' || n WHEN n % 25000 = 4 THEN 'newcomer'
                ELSE CASE WHEN n % 3 = 0 THEN 'b-' ELSE 'y-' END || n % 1001 END,
           now()
    FROM generate_series(1, 1100000) AS n
"""
PAGE_ROWS = 101  # the service asks for the default page size (100) plus one, to know whether a next page exists
INDEXES = {"following": "follows_following_page_idx", "followers": "follows_followers_page_idx"}
LISTED_BY = {"following": "follower", "followers": "followed"}


@pytest.fixture(scope="module")
def skewed_follows(service_environment) -> Iterator[psycopg2.extensions.connection]:
    """A connection to a migrated database of its own holding the 1,100,000 edges above, analysed."""
    with loaded_database(service_environment, DEFINITION, "follows", _LOAD) as connection:
        yield connection


@pytest.fixture
def cursor(skewed_follows: psycopg2.extensions.connection) -> Iterator[psycopg2.extensions.cursor]:
    with rolled_back_cursor(skewed_follows) as cursor:
        yield cursor


@pytest.mark.parametrize("second_page", [False, True], ids=["first page", "second page"])
@pytest.mark.parametrize("direction,username", [
    ("following", COLLECTOR), ("following", SMALL), ("followers", CELEBRITY), ("followers", SMALL),
])
def test_a_page_walks_the_directions_index_whoever_the_user(cursor, direction, username, second_page):
    follows = PostgresFollowRepository(cursor)
    after_id = follows.list(username, direction, None, PAGE_ROWS)[PAGE_ROWS - 2].id if second_page else None
    page = follows.list(username, direction, after_id, PAGE_ROWS)
    assert len(page) == PAGE_ROWS and {getattr(edge, LISTED_BY[direction]) for edge in page} == {username}
    assert [edge.id for edge in page] == sorted((edge.id for edge in page), reverse=True)
    assert after_id is None or page[0].id < after_id
    # One index scan, in the index's order: no Seq Scan, no follows_pkey, no Sort, no Bitmap Heap Scan.
    assert [(node["Node Type"], node.get("Index Name")) for node in plan_nodes(cursor)] == [
        ("Limit", None), ("Index Scan", INDEXES[direction])]


@pytest.mark.parametrize("direction,username", [
    ("following", NEWCOMER), ("followers", NEWCOMER), ("following", TYPICAL_FOLLOWER),
    ("followers", TYPICAL_FOLLOWED),
])
def test_a_page_expected_to_hold_all_the_users_edges_reads_them_through_the_directions_index(cursor, direction,
                                                                                             username):
    """Expecting a page to hold all of a user's edges, PostgreSQL may fetch them in heap order (a bitmap) and
    sort them: still only that user's edges, found through their index. The typical users' ~500 and ~330 edges
    are estimated at ~50, as the 300,000 fans and stars make names look rare."""
    PostgresFollowRepository(cursor).list(username, direction, None, PAGE_ROWS)
    for node in plan_nodes(cursor):
        assert node["Node Type"] in {"Limit", "Sort", "Index Scan", "Bitmap Heap Scan", "Bitmap Index Scan"}
        assert node["Node Type"] not in {"Index Scan", "Bitmap Index Scan"} or node["Index Name"] == INDEXES[direction]


@pytest.mark.parametrize("direction,username", [("following", COLLECTOR), ("followers", CELEBRITY)])
def test_an_old_users_first_page_reads_a_few_of_their_own_edges(cursor, direction, username):
    PostgresFollowRepository(cursor).list(username, direction, None, PAGE_ROWS)
    nodes = plan_nodes(cursor, "ANALYZE, BUFFERS, ")
    # Walking follows_pkey instead removed 500,000 / 800,000 rows and touched ~5,000 / ~8,400 buffers.
    assert sum(node.get("Rows Removed by Filter", 0) for node in nodes) == 0
    assert nodes[0]["Shared Hit Blocks"] + nodes[0]["Shared Read Blocks"] <= 50
