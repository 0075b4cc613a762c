"""The plan of a user's page of links, on a table big and skewed enough for the planner to have a choice.

PostgreSQL costs a page as if each user's links were spread evenly over the table. With `username = %s ...
ORDER BY id DESC` that made it walk links_pkey backwards for a user whose links are all older than everyone
else's, filtering out every newer row (1,000,000 here); a page must walk links_user_page_idx whatever the data.
The table is loaded in a database of this module's own, dropped at the end."""
from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest
from delinkcious.link.app import DEFINITION
from delinkcious.link.domain import LinkFilter
from delinkcious.link.repository import PostgresLinkRepository

from tests.support.query_plans import loaded_database, plan_nodes, rolled_back_cursor

OLD_TIMER = "old-timer"  # 100,000 links, all older than anyone else's
HEAVY = "heavy"  # 200,000 links spread over the table: the user with most rows
SMALL = "small"  # 1,000 links
NEWCOMER = "newcomer"  # 10 links: fewer than a page
# ...and 798,990 links of ~1,600 other users.
_LOAD = """
    INSERT INTO links (username, url, url_key, title, description, tags, created_at, updated_at)
    SELECT owner, 'https://example.com/' || n, 'example.com/' || n, 'Link ' || n, '', ARRAY['tag-' || n % 3],
           now(), now()
    FROM generate_series(1, 1100000) AS n
    CROSS JOIN LATERAL (SELECT CASE WHEN n <= 100000 THEN 'old-timer' WHEN n % 5 = 0 THEN 'heavy'
                                    WHEN n % 1000 = 1 THEN 'small' WHEN n % 100000 = 3 THEN 'newcomer'
                                    ELSE 'user-' || n % 2000 END) AS row_owner (owner)
"""
PAGE_ROWS = 11  # the service asks for the default page size (10) plus one, to know whether a next page exists
USER_INDEX = "links_user_page_idx"

SHAPES = {
    "first page": (LinkFilter(), False),
    "second page": (LinkFilter(), True),
    "tag": (LinkFilter(tags=("tag-1",)), False),
    "regexes": (LinkFilter(url_regex=r"^https://example\.com/[0-9]+$", title_regex="^Link ", description_regex="^$"),
                False),
    "tag and regexes, second page": (LinkFilter(url_regex="example", title_regex="Link", tags=("tag-2",)), True),
}
NOTHING_MATCHES = LinkFilter(title_regex="^nothing like this$")


@pytest.fixture(scope="module")
def skewed_links(service_environment) -> Iterator[psycopg2.extensions.connection]:
    """A connection to a migrated database of its own holding the 1,100,000 links above, analysed."""
    with loaded_database(service_environment, DEFINITION, "links", _LOAD) as connection:
        yield connection


@pytest.fixture
def cursor(skewed_links: psycopg2.extensions.connection) -> Iterator[psycopg2.extensions.cursor]:
    with rolled_back_cursor(skewed_links) as cursor:
        yield cursor


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("username", [OLD_TIMER, HEAVY, SMALL])
def test_a_page_walks_the_users_index_whoever_the_user(cursor, username, shape):
    link_filter, second_page = SHAPES[shape]
    links = PostgresLinkRepository(cursor)
    after_id = links.list(username, link_filter, None, PAGE_ROWS)[PAGE_ROWS - 2].id if second_page else None
    page = links.list(username, link_filter, after_id, PAGE_ROWS)
    assert len(page) == PAGE_ROWS and {link.username for link in page} == {username}
    assert [link.id for link in page] == sorted((link.id for link in page), reverse=True)
    assert after_id is None or page[0].id < after_id
    # One index scan, in the index's order: no Seq Scan, no links_pkey, no Sort, no Bitmap Heap Scan.
    assert [(node["Node Type"], node.get("Index Name")) for node in plan_nodes(cursor)] == [
        ("Limit", None), ("Index Scan", USER_INDEX)]


# Not the heavy user with no match: their links lie on every page of the table, which PostgreSQL then reads
# whole (a parallel Seq Scan), as many pages as through their index.
@pytest.mark.parametrize("username,link_filter", [
    (NEWCOMER, LinkFilter()), (OLD_TIMER, NOTHING_MATCHES), (SMALL, NOTHING_MATCHES),
], ids=["fewer links than a page", "old-timer, no match", "small, no match"])
def test_a_page_expected_to_hold_all_the_users_matches_reads_them_through_the_users_index(cursor, username,
                                                                                          link_filter):
    """Expecting to read all of a user's links anyway, PostgreSQL may fetch them in heap order (a bitmap) and
    sort the few that match: still only that user's rows, found through their index."""
    PostgresLinkRepository(cursor).list(username, link_filter, None, PAGE_ROWS)
    for node in plan_nodes(cursor):
        assert node["Node Type"] in {"Limit", "Sort", "Index Scan", "Bitmap Heap Scan", "Bitmap Index Scan"}
        assert node["Node Type"] not in {"Index Scan", "Bitmap Index Scan"} or node["Index Name"] == USER_INDEX


@pytest.mark.parametrize("shape", ["first page", "tag", "regexes"])
def test_the_old_timers_first_page_reads_a_few_of_their_own_rows(cursor, shape):
    link_filter, _ = SHAPES[shape]
    PostgresLinkRepository(cursor).list(OLD_TIMER, link_filter, None, PAGE_ROWS)
    nodes = plan_nodes(cursor, "ANALYZE, BUFFERS, ")
    # Walking links_pkey instead removed 1,000,000 rows and touched ~23,000 buffers.
    assert sum(node.get("Rows Removed by Filter", 0) for node in nodes) <= 5 * PAGE_ROWS
    assert nodes[0]["Shared Hit Blocks"] + nodes[0]["Shared Read Blocks"] <= 50
