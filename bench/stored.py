"""Growing the stored data behind the system's back, so reads can be timed at 1k, 100k and 1M stored links
and feed items: rows go straight into the link service's PostgreSQL database (INSERT .. SELECT
generate_series), feed items straight into the news service's Redis, both as those services store them.

Every loaded row is newer (a higher id, a later created_at) than the measured user's links, so that user's
links are all older than everyone else's: a page of them must not cost more as others' links pile up.
"""

from __future__ import annotations

import time

import psycopg2
import redis
from delinkcious.contracts.events import LinkAdded
from delinkcious.news.domain import FeedItem

LOADED_USERS = 1000  # the loaded links and feed items are spread over this many other users
FEED_LENGTH = 1000  # items per loaded feed (the news service's default FEED_MAX_LENGTH)


def count_links(dsn: str) -> int:
    connection = psycopg2.connect(dsn, connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM links")
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def grow_links(dsn: str, total: int) -> int:
    """Insert links of other users until the table holds `total` rows; the number stored afterwards."""
    connection = psycopg2.connect(dsn, connect_timeout=10)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = '600s'")
            cursor.execute("SELECT count(*), coalesce(max(id), 0) FROM links")
            stored, last_id = cursor.fetchone()
            if total > stored:
                cursor.execute(
                    """
                    INSERT INTO links (username, url, url_key, title, description, tags, status, created_at,
                                       updated_at)
                    SELECT 'bench-stored-' || (n %% %(users)s), 'https://stored.bench.invalid/' || n,
                           'https://stored.bench.invalid/' || n, 'Stored link ' || n, '', '{}', 'valid',
                           now() + n * interval '1 millisecond', now() + n * interval '1 millisecond'
                    FROM generate_series(%(first)s, %(last)s) AS n
                    """,
                    {"users": LOADED_USERS, "first": last_id + 1, "last": last_id + total - stored},
                )
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE links")
            cursor.execute("SELECT count(*) FROM links")
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def count_feed_items(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url, socket_timeout=30)
    try:
        return sum(client.zcard(key) for key in client.scan_iter(match="news:feed:*", count=1000))
    finally:
        client.close()


def grow_feeds(redis_url: str, total: int) -> int:
    """Fill feeds of other users (FEED_LENGTH items each, as the news service encodes them) until all feeds
    hold `total` items together; the number stored afterwards."""
    client = redis.Redis.from_url(redis_url, socket_timeout=60)
    try:
        stored = count_feed_items(redis_url)
        now_ms = int(time.time() * 1000)
        feed = 0
        while stored < total:
            key = f"news:feed:bench-stored-{feed}"
            have = client.zcard(key)
            wanted = min(FEED_LENGTH - have, total - stored)
            if wanted > 0:
                items = {
                    FeedItem(event_id=f"{feed}-{index}", event_type=LinkAdded.event_type,
                             author=f"bench-stored-{index % LOADED_USERS}",
                             url=f"https://stored.bench.invalid/{feed}/{index}", title=f"Stored link {index}",
                             occurred_ms=now_ms + index).encode(): now_ms + index
                    for index in range(have, have + wanted)
                }
                client.zadd(key, items)
                stored += wanted
            feed += 1
        return stored
    finally:
        client.close()
