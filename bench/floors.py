"""The floors: the least each of our figures could cost on this machine, measured the same way as the figure.

The bare HTTP and gRPC servers (bench/bare.py) run as processes of their own, each in its own process group
(so its memory is measured as a service's is). The NATS, Redis and PostgreSQL floors talk to the same servers
the system uses (or, with --base-url, to ones started for the floors alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import redis
import requests
from delinkcious.news.domain import FeedItem
from delinkcious.news.store import RedisFeedStore

from bench.api import Timings
from bench.system import Memory, group_memory

ROOT = Path(__file__).resolve().parents[1]
FLOOR_TABLE = "bench_floor_links"


class BareServer:
    """One bare server process (`python -m bench.bare KIND`), stopped by stop() whatever happened."""

    def __init__(self, kind: str, port: int, log_dir: Path, *extra: str) -> None:
        self.kind = kind
        self.port = port
        self.command = [sys.executable, "-m", "bench.bare", kind, "--port", str(port), *extra]
        self.log_path = log_dir / f"bare-{kind}.log"
        self.ready_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until it answers (HTTP 200 on /, or a TCP connection for gRPC)."""
        started = time.perf_counter()
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                                 os.environ.get("PYTHONPATH")]))}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(self.command, cwd=ROOT, env=environment, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare {self.kind} server did not start; see {self.log_path}")
            time.sleep(0.02)
        self.ready_seconds = time.perf_counter() - started

    def _answers(self) -> bool:
        try:
            if self.kind == "grpc-echo":
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            return requests.get(self.url, timeout=1).status_code == 200
        except (OSError, requests.RequestException):
            return False

    def memory(self) -> Memory:
        assert self._process is not None
        return group_memory(self._process.pid)

    def stop(self, timeout: float = 40.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(10)


def nats_publish_and_ack(nats_url: str, count: int) -> Timings:
    """`count` JetStream publishes one after another (as propagation adds links), each timed until its ack,
    to a file-stored stream of our own like the services' (a message id per message), removed afterwards."""
    import nats
    from nats.js.api import StorageType, StreamConfig

    async def measure() -> Timings:
        client = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1)
        try:
            jetstream = client.jetstream()
            stream = f"BENCH_FLOOR_{uuid.uuid4().hex[:8].upper()}"
            await jetstream.add_stream(StreamConfig(name=stream, subjects=[f"bench.{stream}.>"],
                                                    storage=StorageType.FILE, duplicate_window=120))
            try:
                payload = b'{"url":"https://floor.bench.invalid/x","title":"Benchmark"}' * 4
                seconds, failures = [], 0
                for _ in range(count):
                    started = time.perf_counter()
                    try:
                        await jetstream.publish(f"bench.{stream}.added", payload, timeout=5,
                                                headers={"Nats-Msg-Id": uuid.uuid4().hex})
                        seconds.append(time.perf_counter() - started)
                    except Exception:  # a failed publish is counted, it does not end the measurement
                        failures += 1
                return Timings(seconds, failures)
            finally:
                await jetstream.delete_stream(stream)
        finally:
            await client.close()

    return asyncio.run(measure())


def redis_fanout(redis_url: str, followers: int, runs: int) -> Timings:
    """The writes of a fan-out alone: an item put in `followers` feeds and each trimmed, by the news store's own
    add_to_feeds (one server-side script per 1,000 feeds), without what the service does around it (reading
    the author's followers and when each followed them, the event); keys removed afterwards."""
    client = redis.Redis.from_url(redis_url, socket_timeout=30, decode_responses=True)
    store = RedisFeedStore(client)
    readers = [f"bench-floor-{uuid.uuid4().hex[:8]}-{index}" for index in range(followers)]
    seconds = []
    try:
        for run in range(runs):
            item = FeedItem(event_id=uuid.uuid4().hex, event_type="link_added", author="floor", url=f"https://floor.bench.invalid/{run}", title="Benchmark",
                            occurred_ms=run)
            started = time.perf_counter()
            store.add_to_feeds(readers, item, 1000)
            seconds.append(time.perf_counter() - started)
    finally:
        for start in range(0, len(readers), 1000):
            client.delete(*(f"news:feed:{reader}" for reader in readers[start:start + 1000]))
        client.close()
    return Timings(seconds, 0)


@contextlib.contextmanager
def floor_table(dsn: str):
    """A table shaped like `links` (its columns, constraints and indexes) for the insert floor, dropped after."""
    connection = psycopg2.connect(dsn, connect_timeout=10)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
            cursor.execute(f"CREATE TABLE {FLOOR_TABLE} (LIKE links INCLUDING ALL)")
            # LIKE copies the id default, the links sequence: the floor gets its own.
            cursor.execute(f"CREATE SEQUENCE {FLOOR_TABLE}_id_seq OWNED BY {FLOOR_TABLE}.id")
            cursor.execute(f"ALTER TABLE {FLOOR_TABLE} ALTER COLUMN id SET DEFAULT nextval('{FLOOR_TABLE}_id_seq')")
        yield FLOOR_TABLE
    finally:
        with contextlib.suppress(psycopg2.Error), connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
        connection.close()
