"""The load of one benchmark phase, run by locust in its own process (`locust --headless -f
bench/locustfile.py CLASS ...`, started by bench/load.py), so gevent patches that process and never ours.

BENCH_LOCUST_CONFIG names a JSON file with what to send: `path` and `query` of an HTTP GET, `tokens` (each
user takes the next one), `rate_per_user` (requests per second of one user, paced on a fixed schedule; null:
no wait, a closed loop), `grpc_target`, `postgres_dsn` and `table` for the floors that are not HTTP, and
`samples_file`, where the latency of every measured request is written when locust quits. A request is
measured when it was sent inside the window from `warmup_seconds` after all users were spawned (when
--reset-stats resets locust's statistics) to the stop, however late its answer came. Locust's own statistics round latencies to whole
milliseconds, too coarse for the floors, and time the window in whole seconds, too coarse for a rate over a
few seconds. Self-contained: locust imports this file by path, without our packages.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from locust import User, constant, events, task
from locust.contrib.fasthttp import FastHttpUser

CONFIG: dict[str, Any] = json.loads(Path(os.environ["BENCH_LOCUST_CONFIG"]).read_text())
REQUEST_TIMEOUT = 10.0  # seconds: every request is bounded
_user_numbers = itertools.count()
_schedule_slots = itertools.count()
_window: dict[str, float] = {}  # wall-clock time when measuring started (all users spawned) and stopped
_requests: list[tuple[float, float, str | None]] = []  # start time, latency in ms, failure kind (None: success)
_skipped_sends = 0
_late_sends = 0
_answered_in_all = 0  # every request answered, warm-up included: what the system did for the CPU it used
LATE_SECONDS = 0.01  # a send this much behind its schedule counts as late (a timer's jitter is less)


def _measuring() -> bool:
    return _window.get("started", math.inf) <= time.time() and "stopped" not in _window


def _wait_time() -> Any:
    """A closed loop without `rate_per_user`; with it, locust's constant_throughput made closer to open loop.

    constant_throughput waits out the rest of one interval after each request, so every oversleep of a busy
    machine lowers the offered rate for good. Here each user keeps a fixed schedule (a send every interval
    from its start): a late send goes out at once and the schedule is kept. A user that fell more than one
    interval behind (an answer slower than its interval) drops the sends it missed, as a closed loop must.
    Late and dropped sends are counted: they say how far from open loop the phase was."""
    rate = CONFIG.get("rate_per_user")
    if not rate:
        return constant(0)
    interval = 1 / rate

    def on_schedule(user: User) -> float:
        global _skipped_sends, _late_sends
        now = time.perf_counter()
        scheduled = user.bench_next_send + interval
        if now - scheduled > interval:
            missed = int((now - scheduled) // interval)
            scheduled += missed * interval
            if _measuring():
                _skipped_sends += missed
        if now - scheduled > LATE_SECONDS and _measuring():
            _late_sends += 1
        user.bench_next_send = scheduled
        return max(0.0, scheduled - now)

    return on_schedule


def _start_schedule(user: User) -> None:
    """Called at the end of on_start; the first task follows at once. Locust starts a second's worth of users
    together, so at a rate each user first waits for its own slot in the interval: the users' sends are then
    evenly spaced, a constant arrival rate, instead of a burst of all of them every interval."""
    rate = CONFIG.get("rate_per_user")
    if rate:
        slot = next(_schedule_slots) % CONFIG["users"]
        time.sleep(slot / CONFIG["users"] / rate)  # gevent's sleep: locust has patched time
    user.bench_next_send = time.perf_counter()


def _next_token() -> str:
    tokens = CONFIG.get("tokens") or [""]
    return tokens[next(_user_numbers) % len(tokens)]


@events.spawning_complete.add_listener
def _start_measuring(user_count: int, **kwargs: Any) -> None:
    # The first moments open connections and fill pools: a warm-up, not measured.
    _window.setdefault("started", time.time() + CONFIG.get("warmup_seconds", 0.0))


@events.test_stopping.add_listener
def _stop_measuring(**kwargs: Any) -> None:
    _window.setdefault("stopped", time.time())


@events.request.add_listener
def _record(response_time: float, exception: BaseException | None, start_time: float | None = None,
            **kwargs: Any) -> None:
    global _answered_in_all
    _answered_in_all += 1
    if "started" in _window:  # which requests count is decided by their start time, at the end
        started = start_time if start_time is not None else time.time() - response_time / 1000
        _requests.append((started, response_time, None if exception is None else _failure_kind(exception)))


def _failure_kind(exception: BaseException) -> str:
    code = getattr(exception, "code", None)
    if callable(code):  # a gRPC error: its status code says it all
        return f"gRPC {getattr(code(), 'name', code())}"
    return f"{type(exception).__name__}: {str(exception)[:60]}"


@events.quitting.add_listener
def _write_samples(**kwargs: Any) -> None:
    """The requests sent while measuring, however late they were answered (--stop-timeout lets the ones in
    flight at the stop finish): their count over the window is the rate the system was offered and took."""
    started, stopped = _window.get("started", 0.0), _window.get("stopped", time.time())
    measured = [(latency, failure) for sent, latency, failure in _requests if started <= sent < stopped]
    failure_kinds: dict[str, int] = {}
    for _, failure in measured:
        if failure is not None:
            failure_kinds[failure] = failure_kinds.get(failure, 0) + 1
    Path(CONFIG["samples_file"]).write_text(json.dumps({
        "latencies_ms": [latency for latency, failure in measured if failure is None],
        "failures": sum(failure_kinds.values()), "failure_kinds": failure_kinds, "skipped_sends": _skipped_sends,
        "late_sends": _late_sends, "answered_in_all": _answered_in_all,
        "window_seconds": max(0.0, stopped - started) if "started" in _window else 0.0,
    }))


class ApiGet(FastHttpUser):
    """GET one path of the public API (or of a bare floor app) as one user."""

    wait_time = _wait_time()
    network_timeout = REQUEST_TIMEOUT
    connection_timeout = REQUEST_TIMEOUT

    def on_start(self) -> None:
        token = _next_token()
        self.request_headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        query = CONFIG.get("query") or {}
        self.target = CONFIG["path"] + (f"?{urlencode(query)}" if query else "")
        _start_schedule(self)

    @task
    def get(self) -> None:
        self.client.get(self.target, headers=self.request_headers, name=CONFIG["name"])


class ApiAddLink(FastHttpUser):
    """POST /v1/links with a URL never saved before, as one of several authors."""

    wait_time = _wait_time()
    network_timeout = REQUEST_TIMEOUT
    connection_timeout = REQUEST_TIMEOUT

    def on_start(self) -> None:
        self.request_headers = {"Authorization": f"Bearer {_next_token()}"}
        _start_schedule(self)

    @task
    def add(self) -> None:
        # As bench/api.py's unique_url: a loopback host of its own, refused by the link checker at once.
        host = ".".join(str(random.randrange(256)) for _ in range(3))
        url = f"http://127.{host}/load/{uuid.uuid4().hex}"
        self.client.post("/v1/links", json={"url": url, "title": "Benchmark"}, headers=self.request_headers,
                         name=CONFIG["name"])


class GrpcEcho(User):
    """A unary gRPC call to the bare echo server: bytes in, the same bytes out."""

    wait_time = _wait_time()

    def on_start(self) -> None:
        import grpc
        import grpc.experimental.gevent as grpc_gevent

        grpc_gevent.init_gevent()  # grpc's own threads must yield to gevent's loop
        self.channel = grpc.insecure_channel(CONFIG["grpc_target"])
        self.echo = self.channel.unary_unary("/bench.Echo/Echo")
        self.payload = b"x" * 200
        _start_schedule(self)

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def call(self) -> None:
        started_at, started = time.time(), time.perf_counter()
        exception = None
        try:
            self.echo(self.payload, timeout=REQUEST_TIMEOUT)
        except Exception as error:  # any failure is counted, none stops the run
            exception = error
        events.request.fire(request_type="grpc", name=CONFIG["name"], response_time=(time.perf_counter() - started)
                            * 1000, response_length=len(self.payload), exception=exception, context={},
                            start_time=started_at)


def _gevent_wait(connection: Any, timeout: float | None = None) -> None:
    """psycopg2's wait callback for gevent (what psycogreen does): poll the connection, yielding while it waits."""
    import psycopg2.extensions
    from gevent.socket import wait_read, wait_write

    while True:
        state = connection.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state == psycopg2.extensions.POLL_READ:
            wait_read(connection.fileno(), timeout=timeout)
        elif state == psycopg2.extensions.POLL_WRITE:
            wait_write(connection.fileno(), timeout=timeout)
        else:
            raise psycopg2.OperationalError(f"bad state from poll: {state}")


class PostgresInsert(User):
    """INSERT one row into a table shaped like `links` and commit, on a connection of this user's own."""

    wait_time = _wait_time()

    def on_start(self) -> None:
        import psycopg2
        import psycopg2.extensions

        psycopg2.extensions.set_wait_callback(_gevent_wait)
        self.connection = psycopg2.connect(CONFIG["postgres_dsn"], connect_timeout=int(REQUEST_TIMEOUT))
        self.statement = (f"INSERT INTO {CONFIG['table']} (username, url, url_key, title, created_at, updated_at) "
                          "VALUES (%s, %s, %s, %s, now(), now()) RETURNING id")
        self.username = f"floor-{next(_user_numbers)}"
        _start_schedule(self)

    def on_stop(self) -> None:
        self.connection.close()

    @task
    def insert(self) -> None:
        url = f"https://floor.bench.invalid/{uuid.uuid4().hex}"
        started_at, started = time.time(), time.perf_counter()
        exception = None
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(self.statement, (self.username, url, url, "Benchmark"))
                cursor.fetchone()
            self.connection.commit()
        except Exception as error:  # any failure is counted, none stops the run
            exception = error
            self.connection.rollback()
        events.request.fire(request_type="sql", name=CONFIG["name"], response_time=(time.perf_counter() - started)
                            * 1000, response_length=0, exception=exception, context={}, start_time=started_at)
