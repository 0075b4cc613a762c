"""`python -m bench`: the whole benchmark in one command (see docs/performance.md).

It starts the system with `delinkcious up` (or uses --base-url), logs two users in, gives one of them links
the other follows, drives the public API at constant offered rates with locust, measures propagation,
fan-out, reads as the stored data grows, memory and start-up time, measures the floors the same way, prints
one table of every figure of ours beside its floor and its targets, and where the machine's CPU went for each
request of the constant-rate loads, and writes them to docs/performance.md.

With --tracing the system exports its traces to a local sink (bench/trace_sink.py) while it is measured.
--tracing-cost measures only GET /v1/links, twice, tracing off and then on, and writes the two side by side
(docs/performance.md, section "Tracing").
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from delinkcious.local.servers import free_port

from bench import api, floors, load, news_fanout, stored
from bench.chart import Series, latency_chart
from bench.report import (
    LATENCY,
    RATE,
    TRACING_BEGIN,
    TRACING_END,
    VALUE,
    Check,
    Figure,
    Report,
    Row,
    machine,
    markdown_table,
    replace_results,
    text_table,
    tracing_text,
)
from bench.stats import median, percentile
from bench.system import LocalSystem, Memory
from bench.trace_sink import SinkCounts, TraceSink

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "performance.md"
CHART = ROOT / "docs" / "performance-latency.svg"

# The targets (reported, never asserted).
LINKS_READ_P99_MS, LINKS_READ_RATE = 25.0, 200.0
LINKS_ADD_P99_MS, LINKS_ADD_RATE = 50.0, 200.0
NEWS_READ_P99_MS, NEWS_READ_RATE = 20.0, 300.0
MAX_THROUGHPUT_SHARE_OF_FLOOR = 0.5
PROPAGATION_P50_MS, PROPAGATION_P99_MS = 50.0, 250.0
FANOUT_SECONDS = news_fanout.BUDGET_SECONDS
STORED_GROWTH_RATIO = 1.5
IDLE_PSS_MB = 80.0
UP_READY_SECONDS = 20.0
HELD_RATE_SHARE = 0.95  # "at 200 req/s" holds when at least this share of the offered rate was achieved


@dataclass(frozen=True)
class Plan:
    """How much of everything: the full run, or --quick (tiny counts and a few seconds per phase)."""

    rate_seconds: float  # each constant-rate phase
    sweep_rates: tuple[float, ...]  # further offered rates of GET /v1/links, for the chart
    sweep_seconds: float
    max_seconds: float  # each closed-loop phase
    max_users: int
    author_links: int  # the followed author's links
    post_authors: int
    propagation_count: int
    stored_levels: tuple[int, ...]  # links and feed items stored, after the first level (what setup left)
    reads_per_level: int
    fanout_followers: int
    fanout_runs: int
    settle_seconds: float  # longest wait for the system to go quiet between phases
    up_timeout: float


FULL = Plan(rate_seconds=30, sweep_rates=(50, 100, 300, 400), sweep_seconds=10, max_seconds=20, max_users=32,
            author_links=1000, post_authors=10, propagation_count=200, stored_levels=(100_000, 1_000_000),
            reads_per_level=200, fanout_followers=10_000, fanout_runs=5, settle_seconds=30, up_timeout=180)
QUICK = Plan(rate_seconds=3, sweep_rates=(100,), sweep_seconds=2, max_seconds=3, max_users=16, author_links=30,
             post_authors=4, propagation_count=5, stored_levels=(2_000, 5_000), reads_per_level=20,
             fanout_followers=200, fanout_runs=2, settle_seconds=3, up_timeout=180)
QUIET_CPU_PERCENT = 15.0  # the system counts as quiet below this share of one core
LOAD_GENERATOR = "load generator"  # locust shares the machine's cores with the system
TRACE_SINK = "trace sink"  # so does the sink the traces go to, with --tracing
# --tracing-cost's GET /v1/links rates: one well within what the system holds (tracing's cost shows as each
# request's own latency), and the target rate, near what two cores hold (its CPU shows as queueing too).
TRACING_COST_RATES = (100.0, LINKS_READ_RATE)


def say(text: str) -> None:
    print(text, flush=True)


def latency_figure(name: str, timings: api.Timings, offered: float | None = None, note: str = "") -> Figure:
    milliseconds = [seconds * 1000 for seconds in timings.seconds]
    return Figure(name=name, headline=LATENCY, offered=offered, p50_ms=percentile(milliseconds, 50),
                  p99_ms=percentile(milliseconds, 99), errors=timings.failures, note=note)


def load_figure(result: load.LoadResult, name: str | None = None) -> Figure:
    note = f"{result.users} users"
    if result.offered_rate is not None:  # how far from open loop it was
        note += f", {result.late_sends:,} sends late, {result.skipped_sends:,} skipped"
    if result.client_cpu_percent > 90:  # locust used a whole core: the client, not the server, was the limit
        note += ", client-bound"
    return Figure(name=name or result.name, headline=RATE if result.offered_rate is None else LATENCY,
                  offered=result.offered_rate, achieved=result.achieved_rate, p50_ms=result.p50_ms,
                  p99_ms=result.p99_ms, errors=result.failures, note=note)


def memory_figure(name: str, memory: Memory) -> Figure:
    return Figure(name=name, headline=VALUE, value=memory.pss_mb, unit="MB PSS",
                  note=f"RSS {memory.rss_mb:.1f} MB, {memory.processes} processes")


def cpu_ms_per_request(before: dict[str, float], after: dict[str, float],
                       result: load.LoadResult) -> dict[str, float]:
    """The CPU milliseconds each process group (and the load generator) spent per request of `result`, between
    two readings of LocalSystem.cpu_seconds_by_group: divided by every request answered in the phase, warm-up
    included, since the CPU readings cover the warm-up too."""
    spent = {group: seconds - before.get(group, 0.0) for group, seconds in after.items()}
    spent[LOAD_GENERATOR] = result.client_cpu_seconds
    answered = result.answered_in_all or result.requests
    return {group: seconds * 1000 / answered for group, seconds in spent.items()}


def machine_cpu_seconds_but_ours() -> float:
    """The CPU seconds the machine's processes have spent so far (user and system time: interrupts, steal and
    I/O wait are no process's), except the benchmark's own (its trace sink included)."""
    machine, ours = psutil.cpu_times(), psutil.Process().cpu_times()
    return machine.user + machine.nice + machine.system - ours.user - ours.system


def rate_checks(figure: Figure, p99_ms: float, rate: float) -> list[Check]:
    held = figure.achieved is not None and figure.achieved >= rate * HELD_RATE_SHARE
    return [Check(f"p99 < {p99_ms:g} ms", figure.p99_ms is not None and figure.p99_ms < p99_ms),
            Check(f"holds {rate:g}/s", held)]


class Benchmark:
    """One run: what it started (stopped by close() whatever happens) and what it measured."""

    def __init__(self, plan: Plan, work_dir: Path, base_url: str | None, report: Report,
                 trace_sink: TraceSink | None = None) -> None:
        self.plan = plan
        self.work_dir = work_dir
        self.report = report
        self.trace_sink = trace_sink  # where the system's traces go; None: tracing off
        tracing_endpoint = trace_sink.url if trace_sink is not None else None
        self.system = LocalSystem(work_dir / "data", tracing_endpoint) if base_url is None else None
        self.base_url = base_url
        self.bare: dict[str, floors.BareServer] = {}
        self.failed_phases: list[str] = []
        self.figures: dict[str, Figure] = {}
        self.loads: dict[str, load.LoadResult] = {}
        self.idle_memory: dict[str, Memory] = {}
        self.loaded_memory: dict[str, Memory] = {}
        self.cpu_per_request: dict[str, dict[str, float]] = {}  # figure name -> process group -> CPU ms per request
        # The CPU ms per request of the same loads spent by the machine's other processes: what disturbed them.
        self.others_cpu_per_request: dict[str, float] = {}
        self.stored_reads: list[tuple[Figure, Figure]] = []  # (GET /v1/links, GET /v1/news) at each stored size
        self.received_before_reads: SinkCounts | None = None  # --tracing-cost: the sink's counts when GET began
        self.started = ExitStack()  # what close() stops, last started first
        self.author: api.User | None = None  # saves links; the reader follows them
        self.reader: api.User | None = None
        self.writers: list[api.User] = []  # the authors of the POST load
        run = uuid.uuid4().hex[:8]
        self.names = {"author": f"bench-author-{run}", "reader": f"bench-reader-{run}",
                      "writers": [f"bench-writer-{run}-{index}" for index in range(plan.post_authors)]}

    # ----------------------------------------------------------------------------------
    # Running and stopping

    def phase(self, name: str, action: Callable[[], Any]) -> None:
        """Run one phase; a failure is reported and the next phases still run (what they need may be missing)."""
        say(f"== {name}")
        started = time.perf_counter()
        try:
            action()
        except Exception as error:  # one broken phase must not lose the others' results
            self.failed_phases.append(f"{name}: {error}")
            say(f"!! {name} failed: {error}\n{traceback.format_exc(limit=3)}")
        say(f"   ({time.perf_counter() - started:.1f} s)")

    def close(self) -> None:
        self.started.close()

    def settle(self) -> None:
        if self.system is not None:
            self.system.settle(QUIET_CPU_PERCENT, self.plan.settle_seconds)

    def run(self) -> None:
        if self.system is None:
            self.report.skipped += [
                "`up` time to ready and memory (the system was not started here)",
                "reads as the stored data grows (needs the link service's database and the news service's Redis)",
                "CPU per request by process group (needs the system's processes)"]
        else:
            self.phase("start the system with `delinkcious up`", self.start_system)
            if self.system.ready_seconds is None:
                return
            self.base_url = self.system.base_url
        self.phase("start the bare servers of the floors", self.start_bare_servers)
        self.phase("log users in; the author saves links, the reader follows", self.set_up_users)
        if self.author is None:
            return
        self.phase("reads at the stored data setup left", self.measure_stored_level)
        self.phase("propagation of an added link to a follower's feed", self.measure_propagation)
        self.phase("load at constant offered rates and closed loops", self.measure_loads)
        if self.system is not None:
            for level in self.plan.stored_levels:
                self.phase(f"reads at {level:,} stored links and feed items",
                           lambda level=level: self.measure_stored_level(level))
        self.phase("fan-out of one link to many followers", self.measure_fanout)

    def run_links_reads(self) -> None:
        """--tracing-cost: the system, its users, and the GET /v1/links loads only."""
        assert self.system is not None
        self.phase("start the system with `delinkcious up`", self.start_system)
        if self.system.ready_seconds is None:
            return
        self.base_url = self.system.base_url
        self.phase("log users in; the author saves links, the reader follows", self.set_up_users)
        if self.author is not None:
            self.phase("GET /v1/links at constant offered rates and its closed loop", self.measure_links_reads)

    def cpu_seconds_by_group(self) -> dict[str, float]:
        """The system's CPU seconds by process group (LocalSystem.cpu_seconds_by_group), and the trace sink's."""
        assert self.system is not None
        seconds = self.system.cpu_seconds_by_group()
        if self.trace_sink is not None:
            seconds[TRACE_SINK] = self.trace_sink.counts().cpu_seconds
        return seconds

    # ----------------------------------------------------------------------------------
    # Phases

    def start_system(self) -> None:
        assert self.system is not None
        say(f"data dir: {self.system.data_dir}")
        self.started.callback(self._stop_system)
        seconds = self.system.start(self.plan.up_timeout)
        say(f"`delinkcious up` ready in {seconds:.1f} s at {self.system.base_url}")
        self.figures["up"] = Figure("`delinkcious up` to ready (fresh data dir)", VALUE, value=seconds, unit="s")
        self.settle()
        self.idle_memory = self.system.memory()

    def _stop_system(self) -> None:
        assert self.system is not None
        code = self.system.stop()
        say(f"`delinkcious up` stopped (exit code {code})")

    def start_bare_servers(self) -> None:
        hello = self._start_bare("hello")
        self._start_bare("front", "--next", hello.url + "/")  # the first of the two hops calls the hello app
        self._start_bare("grpc-echo")
        self.figures["hello start"] = Figure("gunicorn+Flask hello: start to first answer", VALUE,
                                             value=hello.ready_seconds, unit="s")
        time.sleep(1.0)  # the workers finish importing before their memory counts as idle
        self.figures["hello idle"] = memory_figure("gunicorn+Flask hello, idle", hello.memory())

    def _start_bare(self, kind: str, *extra: str) -> floors.BareServer:
        server = floors.BareServer(kind, free_port(), self.work_dir, *extra)
        self.bare[kind] = server
        self.started.callback(server.stop)
        server.start()
        return server

    def set_up_users(self) -> None:
        assert self.base_url is not None
        author, reader, *writers = api.login_many(
            self.base_url, [self.names["author"], self.names["reader"], *self.names["writers"]])
        session = api.new_session()
        api.follow(session, self.base_url, reader, author)
        api.add_links(self.base_url, author, [api.unique_url("setup") for _ in range(self.plan.author_links)])
        feed_full = api.wait_for_feed(self.base_url, reader, min(self.plan.author_links, stored.FEED_LENGTH),
                                      deadline=max(10.0, self.plan.settle_seconds * 2))
        if not feed_full:
            self.report.notes.append("the reader's feed did not hold all of the author's links before the reads")
        self.author, self.reader, self.writers = author, reader, writers
        say(f"{author.username} saved {self.plan.author_links} links; {reader.username} follows them")
        self.settle()

    def measure_stored_level(self, level: int | None = None) -> None:
        assert self.base_url is not None and self.author is not None and self.reader is not None
        if level is not None and self.system is not None:
            say(f"growing to {level:,} links (PostgreSQL) and {level:,} feed items (Redis)")
            stored.grow_links(self.system.database_dsn("link"), level)
            stored.grow_feeds(self.system.redis_url, level)
            self.settle()
        if self.system is not None:
            links = stored.count_links(self.system.database_dsn("link"))
            items = stored.count_feed_items(self.system.redis_url)
            links_stored, items_stored = f"{links:,} links stored", f"{items:,} feed items stored"
        else:  # what else a running system holds is not known here
            links = items = self.plan.author_links
            links_stored, items_stored = f"{links:,} links", f"{items:,} feed items"
        session = api.new_session()
        count = self.plan.reads_per_level
        links_read = api.sequential_reads(
            lambda: session.get(f"{self.base_url}/v1/links", headers=self.author.headers, timeout=10), count)
        news_read = api.sequential_reads(
            lambda: session.get(f"{self.base_url}/v1/news", headers=self.reader.headers, timeout=10), count)
        links_figure = latency_figure(f"GET /v1/links, {links_stored} (the oldest user's)", links_read)
        news_figure = latency_figure(f"GET /v1/news, {items_stored}", news_read)
        self.stored_reads.append((links_figure, news_figure))
        say(f"{links_figure.name}: p50 {links_figure.p50_ms:.2f} ms; {news_figure.name}: p50 "
            f"{news_figure.p50_ms:.2f} ms")
        if level is None and "front" in self.bare:
            hops = api.sequential_reads(lambda: session.get(self.bare["front"].url + "/", timeout=10), count)
            self.figures["hops sequential"] = latency_figure("two Flask hops, one request at a time", hops)

    def measure_propagation(self) -> None:
        assert self.base_url is not None and self.author is not None and self.reader is not None
        timings = api.propagation(self.base_url, self.author, self.reader, self.plan.propagation_count, deadline=10)
        self.figures["propagation"] = latency_figure("add link -> in follower's GET /v1/news", timings,
                                                     note=f"{self.plan.propagation_count} links, one at a time")
        say(f"propagation: p50 {self.figures['propagation'].p50_ms:.1f} ms, "
            f"p99 {self.figures['propagation'].p99_ms:.1f} ms, {timings.failures} not seen")
        if self.system is not None:
            nats = floors.nats_publish_and_ack(self.system.nats_url, self.plan.propagation_count)
            self.figures["nats"] = latency_figure("NATS JetStream publish+ack, one at a time", nats)
        else:
            self.report.skipped.append("NATS publish+ack floor (needs the system's NATS server; not with --base-url)")

    def measure_loads(self) -> None:
        assert self.base_url is not None and self.author is not None and self.reader is not None
        plan = self.plan
        front, hello, echo = self.bare["front"].url, self.bare["hello"].url, self.bare["grpc-echo"]
        reads = {"path": "/v1/links", "tokens": [self.author.token]}
        at_target_rates: list[tuple[load.Load, load.Load | None]] = [
            (load.Load("GET /v1/links", "ApiGet", self.base_url, LINKS_READ_RATE, plan.rate_seconds, settings=reads),
             load.Load("two Flask hops", "ApiGet", front, LINKS_READ_RATE, plan.rate_seconds,
                       settings={"path": "/"})),
            (load.Load("POST /v1/links", "ApiAddLink", self.base_url, LINKS_ADD_RATE, plan.rate_seconds,
                       settings={"tokens": [writer.token for writer in self.writers]}),
             self._insert_floor(LINKS_ADD_RATE, plan.rate_seconds)),
            (load.Load("GET /v1/news", "ApiGet", self.base_url, NEWS_READ_RATE, plan.rate_seconds,
                       settings={"path": "/v1/news", "tokens": [self.reader.token]}),
             load.Load("gRPC echo", "GrpcEcho", f"http://{echo.address}", NEWS_READ_RATE, plan.rate_seconds,
                       settings={"grpc_target": echo.address})),
        ]
        cpu_measured = [ours for ours, _ in at_target_rates]
        pairs: list[tuple[load.Load, load.Load | None]] = [
            *at_target_rates,
            *((load.Load("GET /v1/links", "ApiGet", self.base_url, rate, plan.sweep_seconds, settings=reads),
               load.Load("two Flask hops", "ApiGet", front, rate, plan.sweep_seconds, settings={"path": "/"}))
              for rate in plan.sweep_rates),
            (load.Load("GET /v1/links", "ApiGet", self.base_url, None, plan.max_seconds, plan.max_users,
                       settings=reads),
             load.Load("two Flask hops", "ApiGet", front, None, plan.max_seconds, plan.max_users,
                       settings={"path": "/"})),
            (load.Load("gunicorn+Flask hello", "ApiGet", hello, None, plan.max_seconds, plan.max_users,
                       settings={"path": "/"}), None),
        ]
        for ours, floor in pairs:
            for phase in (ours, floor):
                if phase is not None:
                    measure_cpu = self.system is not None and any(phase is measured for measured in cpu_measured)
                    self._run_load(phase, cpu_key=phase.name if measure_cpu else None)
        self.figures["hello loaded"] = memory_figure("gunicorn+Flask hello, after its closed loop",
                                                     self.bare["hello"].memory())

    def measure_links_reads(self) -> None:
        """--tracing-cost: GET /v1/links at TRACING_COST_RATES and in the closed loop, as measure_loads drives
        them, each with its CPU per request."""
        assert self.base_url is not None and self.author is not None
        plan, reads = self.plan, {"path": "/v1/links", "tokens": [self.author.token]}
        phases = [*(load.Load("GET /v1/links", "ApiGet", self.base_url, rate, plan.rate_seconds, settings=reads)
                    for rate in TRACING_COST_RATES),
                  load.Load("GET /v1/links", "ApiGet", self.base_url, None, plan.max_seconds, plan.max_users,
                            settings=reads)]
        self.settle()
        if self.trace_sink is not None:  # the spans of the set-up are not counted as the reads'
            self.trace_sink.wait_until_drained()
            self.received_before_reads = self.trace_sink.counts()
        for phase in phases:
            self._run_load(phase, cpu_key=_load_key(phase))

    def _run_load(self, phase: load.Load, cpu_key: str | None) -> load.LoadResult | None:
        """One load phase once the system is quiet; with `cpu_key`, its CPU per request is kept under that key.
        A failed load is reported, and the other loads still run."""
        self.settle()
        cpu_before = self.cpu_seconds_by_group() if cpu_key is not None else {}
        machine_before = machine_cpu_seconds_but_ours() if cpu_key is not None else 0.0
        try:
            result = load.run_load(phase, self.work_dir)
        except Exception as error:  # the other loads still run
            self.failed_phases.append(f"{_load_key(phase)}: {error}")
            say(f"!! {_load_key(phase)} failed: {error}")
            return None
        self.loads[_load_key(phase)] = result
        say(f"   {result.summary}")
        if phase.host == self.base_url and self.system is not None:  # ours, not a floor's
            self._sample_loaded_memory()
        if cpu_key is not None:
            self._measure_cpu_per_request(cpu_key, cpu_before, machine_before, result)
        return result

    def _measure_cpu_per_request(self, key: str, before: dict[str, float], machine_before: float,
                                 result: load.LoadResult) -> None:
        """After a load: wait until what its requests set off (outbox relay, link checks, news fan-out) is done,
        so that work counts too, then read the CPU again; and what the machine's other processes spent meanwhile."""
        assert self.system is not None
        self.settle()
        after = self.cpu_seconds_by_group()
        machine_spent = machine_cpu_seconds_but_ours() - machine_before
        if not result.requests:
            self.report.notes.append(f"no CPU per request of {key}: no request was measured")
            return
        self.cpu_per_request[key] = cpu_ms_per_request(before, after, result)
        ours_ms = sum(ms for group, ms in self.cpu_per_request[key].items() if group != TRACE_SINK)
        answered = result.answered_in_all or result.requests
        # At least 0: the processes' own times add up to about 2% more than the machine's, which is noise here.
        self.others_cpu_per_request[key] = max(0.0, machine_spent * 1000 / answered - ours_ms)
        total = sum(self.cpu_per_request[key].values())
        say(f"   CPU per request: {total:.2f} ms in all")

    def _insert_floor(self, rate: float, seconds: float) -> load.Load | None:
        if self.system is None:
            self.report.skipped.append("psycopg2 insert floor (needs the system's PostgreSQL; not with --base-url)")
            return None
        table = self.started.enter_context(floors.floor_table(self.system.database_dsn("link")))
        return load.Load("psycopg2 INSERT+COMMIT", "PostgresInsert", "http://127.0.0.1", rate, seconds,
                         settings={"postgres_dsn": self.system.database_dsn("link"), "table": table})

    def _sample_loaded_memory(self) -> None:
        assert self.system is not None
        for service, memory in self.system.memory().items():
            if service not in self.loaded_memory or memory.pss_mb > self.loaded_memory[service].pss_mb:
                self.loaded_memory[service] = memory

    def measure_fanout(self) -> None:
        plan = self.plan
        with ExitStack() as stack:
            redis_url = self.system.redis_url if self.system is not None else None
            if redis_url is None:  # with --base-url: a Redis of our own for both
                from delinkcious.local.servers import RedisServer

                server = RedisServer(self.work_dir / "fanout-redis")
                server.start()
                stack.callback(server.stop)
                redis_url = server.url
            ours = news_fanout.measure(plan.fanout_followers, plan.fanout_runs, redis_url, verbose=False)
            floor = floors.redis_fanout(redis_url, plan.fanout_followers, plan.fanout_runs)
        self.figures["fanout"] = Figure(f"fan-out of one link to {plan.fanout_followers:,} followers", VALUE,
                                        value=median(ours), unit="s", note=f"median of {len(ours)}, max "
                                                                           f"{max(ours):.3f} s")
        self.figures["redis fanout"] = Figure(f"the writes alone: {plan.fanout_followers:,} feeds, one script per 1,000",
                                              VALUE, value=median(floor.seconds), unit="s",
                                              note=f"median of {len(floor.seconds)}")
        say(f"fan-out: median {median(ours):.3f} s (floor {median(floor.seconds):.3f} s)")

    # ----------------------------------------------------------------------------------
    # The table

    def rows(self) -> list[Row]:
        rows: list[Row] = []
        figures, loads = self.figures, self.loads

        def pair(ours_key: str, floor_key: str | None) -> tuple[Figure, Figure | None] | None:
            if ours_key not in loads:
                return None
            floor = loads.get(floor_key) if floor_key else None
            return load_figure(loads[ours_key]), load_figure(floor) if floor else None

        if found := pair(f"GET /v1/links@{LINKS_READ_RATE:g}", f"two Flask hops@{LINKS_READ_RATE:g}"):
            rows.append(Row(*found, rate_checks(found[0], LINKS_READ_P99_MS, LINKS_READ_RATE)))
        if found := pair(f"POST /v1/links@{LINKS_ADD_RATE:g}", f"psycopg2 INSERT+COMMIT@{LINKS_ADD_RATE:g}"):
            rows.append(Row(*found, [*rate_checks(found[0], LINKS_ADD_P99_MS, LINKS_ADD_RATE),
                                     Check("no errors", found[0].errors == 0)]))
        if found := pair(f"GET /v1/news@{NEWS_READ_RATE:g}", f"gRPC echo@{NEWS_READ_RATE:g}"):
            rows.append(Row(*found, rate_checks(found[0], NEWS_READ_P99_MS, NEWS_READ_RATE)))
        if found := pair("GET /v1/links@max", "two Flask hops@max"):
            ours, floor = found
            share = (ours.achieved or 0) / floor.achieved if floor and floor.achieved else None
            rows.append(Row(ours, floor, [Check(f">= {MAX_THROUGHPUT_SHARE_OF_FLOOR:.0%} of the floor",
                                                None if share is None else share >= MAX_THROUGHPUT_SHARE_OF_FLOOR)]))
        for rate in self.plan.sweep_rates:
            if found := pair(f"GET /v1/links@{rate:g}", f"two Flask hops@{rate:g}"):
                rows.append(Row(*found))
        if "propagation" in figures:
            propagation = figures["propagation"]
            rows.append(Row(propagation, figures.get("nats"), [
                Check(f"p50 < {PROPAGATION_P50_MS:g} ms", propagation.p50_ms < PROPAGATION_P50_MS),
                Check(f"p99 < {PROPAGATION_P99_MS:g} ms", propagation.p99_ms < PROPAGATION_P99_MS),
                Check("every link seen", propagation.errors == 0)]))
        if "fanout" in figures:
            rows.append(Row(figures["fanout"], figures.get("redis fanout"),
                            [Check(f"< {FANOUT_SECONDS:g} s", figures["fanout"].value < FANOUT_SECONDS)]))
        rows += self._stored_rows()
        for service, memory in self.idle_memory.items():
            idle = memory_figure(f"memory of {service}, idle", memory)
            rows.append(Row(idle, figures.get("hello idle"),
                            [Check(f"PSS < {IDLE_PSS_MB:g} MB", memory.pss_mb < IDLE_PSS_MB)]))
        for service, memory in self.loaded_memory.items():
            rows.append(Row(memory_figure(f"memory of {service}, loaded (highest)", memory),
                            figures.get("hello loaded")))
        if "up" in figures:
            rows.append(Row(figures["up"], figures.get("hello start"),
                            [Check(f"< {UP_READY_SECONDS:g} s", figures["up"].value < UP_READY_SECONDS)]))
        return rows

    def _stored_rows(self) -> list[Row]:
        if not self.stored_reads:
            return []
        rows = []
        first_links, first_news = self.stored_reads[0]
        last_index = len(self.stored_reads) - 1
        for index, (links_figure, news_figure) in enumerate(self.stored_reads):
            for figure, first in ((links_figure, first_links), (news_figure, first_news)):
                if index == 0:
                    rows.append(Row(figure, self.figures.get("hops sequential")))
                    continue
                checks = []
                if index == last_index:
                    checks = [Check(f"p50 <= {STORED_GROWTH_RATIO:g}x the first",
                                    figure.p50_ms <= STORED_GROWTH_RATIO * first.p50_ms)]
                rows.append(Row(figure, replace(first, name=f"ours at {first.name.split(', ', 1)[1]}"), checks))
        return rows

    def floor_figures(self) -> list[Figure]:
        keys = ("hops sequential", "nats", "redis fanout", "hello idle", "hello loaded", "hello start")
        found = [load_figure(result) for key, result in self.loads.items() if not _is_ours(key)]
        return found + [self.figures[key] for key in keys if key in self.figures]

    def chart(self) -> str:
        def points(name: str, which: str) -> list[tuple[float, float]]:
            return sorted((result.offered_rate, getattr(result, which)) for key, result in self.loads.items()
                          if result.name == name and result.offered_rate is not None)

        series = []
        for color, name in enumerate(("GET /v1/links", "two Flask hops", "POST /v1/links", "psycopg2 INSERT+COMMIT",
                                      "GET /v1/news", "gRPC echo")):
            for which, dashed in (("p50_ms", False), ("p99_ms", True)):
                if found := points(name, which):
                    series.append(Series(f"{name} {which[:3]}", found, dashed, color))
        return latency_chart("Latency against offered rate (ours and the floors)", series)


def _load_key(phase: load.Load) -> str:
    return f"{phase.name}@{'max' if phase.offered_rate is None else f'{phase.offered_rate:g}'}"


def _is_ours(key: str) -> bool:
    return key.split("@")[0] in ("GET /v1/links", "POST /v1/links", "GET /v1/news")


# --------------------------------------------------------------------------------------
# Tracing off and on (--tracing-cost)


@contextmanager
def trace_sink(wanted: bool) -> Iterator[TraceSink | None]:
    """A started trace sink, stopped after the block (after the system, whose last spans it takes); or None."""
    if not wanted:
        yield None
        return
    sink = TraceSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


def tracing_failures(tracing: SinkCounts | None) -> list[str]:
    """Why a traced run does not count: no span arrived (tracing silently off), or an export did not decode."""
    if tracing is None:
        return []
    failures = []
    if tracing.spans == 0:
        failures.append("tracing was on, but the trace sink received no span")
    if tracing.rejected:
        failures.append(f"the trace sink could not decode {tracing.rejected} exports")
    return failures


@dataclass(frozen=True)
class LinksReads:
    """What one `up` run of --tracing-cost measured."""

    loads: dict[str, load.LoadResult]  # by _load_key
    cpu_per_request: dict[str, dict[str, float]]  # _load_key -> process group -> CPU ms per request
    others_cpu_per_request: dict[str, float]  # _load_key -> CPU ms per request of the machine's other processes
    tracing: SinkCounts | None  # what the trace sink received; None: tracing off
    spans_per_request: float | None  # spans received from the first GET /v1/links load on, per request answered
    traces_per_request: float | None  # the same for traces (root spans): 1 when every request was traced
    failures: list[str]
    notes: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"loads": {key: asdict(result) for key, result in self.loads.items()},
                "cpu_per_request": self.cpu_per_request, "others_cpu_per_request": self.others_cpu_per_request,
                "tracing": asdict(self.tracing) if self.tracing else None,
                "spans_per_request": self.spans_per_request, "traces_per_request": self.traces_per_request,
                "failures": self.failures, "notes": self.notes}


def links_reads_in_one_up(plan: Plan, work_dir: Path, traced: bool) -> LinksReads:
    """One `up` run of --tracing-cost, tracing off or on."""
    work_dir.mkdir()
    report = Report(command="", machine={})  # what the phases note
    with trace_sink(traced) as sink:
        benchmark = Benchmark(plan, work_dir, None, report, sink)
        try:
            benchmark.run_links_reads()
        finally:
            benchmark.close()
        counts = sink.counts() if sink is not None else None
    answered = sum(result.answered_in_all or result.requests for result in benchmark.loads.values())
    spans_per_request = traces_per_request = None
    if counts is not None and (before := benchmark.received_before_reads) is not None and answered:
        spans_per_request = (counts.spans - before.spans) / answered
        traces_per_request = (counts.traces - before.traces) / answered
    return LinksReads(benchmark.loads, benchmark.cpu_per_request, benchmark.others_cpu_per_request, counts,
                      spans_per_request, traces_per_request, [*benchmark.failed_phases, *tracing_failures(counts)], report.notes)


def system_cpu_ms(costs: dict[str, float]) -> float:
    """CPU per request of the system itself: every process group but the load generator and the trace sink."""
    return sum(ms for group, ms in costs.items() if group not in (LOAD_GENERATOR, TRACE_SINK))


def _relative(off: float, on: float) -> str:
    if not off or math.isnan(off) or math.isnan(on):
        return "-"
    return f"{(on / off - 1) * 100:+.0f}%"


def _cpu_change(off: float, on: float) -> str:
    return f"{on - off:+.2f} ms ({_relative(off, on)})"


def tracing_cost_rows(off: LinksReads, on: LinksReads) -> list[list[str]]:
    """GET /v1/links with tracing off and on: each load's achieved rate, p50 and p99 where a rate was offered,
    the system's CPU per request, the trace sink's, and that of the machine's other processes (which should be
    near 0: anything else running disturbs the comparison); then the spans and traces each request made."""
    rows: list[list[str]] = []
    keys = [*(f"GET /v1/links@{rate:g}" for rate in TRACING_COST_RATES), "GET /v1/links@max"]
    for key in keys:
        if key not in off.loads or key not in on.loads:
            continue
        before, after = off.loads[key], on.loads[key]
        if before.offered_rate is not None:
            label = f"{before.offered_rate:g}/s offered"
            rows.append([f"{label}: achieved", f"{before.achieved_rate:.1f}/s", f"{after.achieved_rate:.1f}/s",
                         _relative(before.achieved_rate, after.achieved_rate)])
            rows.append([f"{label}: p50", f"{before.p50_ms:.2f} ms", f"{after.p50_ms:.2f} ms",
                         _relative(before.p50_ms, after.p50_ms)])
            rows.append([f"{label}: p99", f"{before.p99_ms:.2f} ms", f"{after.p99_ms:.2f} ms",
                         _relative(before.p99_ms, after.p99_ms)])
        else:
            label = f"maximum ({before.users} users, closed loop)"
            rows.append([f"{label}: achieved", f"{before.achieved_rate:.1f}/s", f"{after.achieved_rate:.1f}/s",
                         _relative(before.achieved_rate, after.achieved_rate)])
        if key in off.cpu_per_request and key in on.cpu_per_request:
            system_off, system_on = system_cpu_ms(off.cpu_per_request[key]), system_cpu_ms(on.cpu_per_request[key])
            rows.append([f"{label}: CPU per request, the system", f"{system_off:.2f} ms", f"{system_on:.2f} ms",
                         _cpu_change(system_off, system_on)])
            if (sink_ms := on.cpu_per_request[key].get(TRACE_SINK)) is not None:
                rows.append([f"{label}: CPU per request, the trace sink", "-", f"{sink_ms:.2f} ms", ""])
        if key in off.others_cpu_per_request and key in on.others_cpu_per_request:
            rows.append([f"{label}: CPU per request, other processes",
                         f"{off.others_cpu_per_request[key]:.2f} ms", f"{on.others_cpu_per_request[key]:.2f} ms", ""])
    if on.spans_per_request is not None and on.traces_per_request is not None:
        rows.append(["spans received per request", "-", f"{on.spans_per_request:.1f}", ""])
        rows.append(["traces received per request (1: every request traced)", "-",
                     f"{on.traces_per_request:.2f}", ""])
    return rows


def tracing_cost_group_rows(off: LinksReads, on: LinksReads, key: str) -> list[list[str]]:
    """The CPU per request of one load by process group, tracing off and on, the costliest with tracing first."""
    costs_off, costs_on = off.cpu_per_request[key], on.cpu_per_request[key]
    groups = sorted({*costs_off, *costs_on}, key=lambda group: (-costs_on.get(group, 0.0), group))
    rows = [[group, f"{costs_off[group]:.2f}" if group in costs_off else "-",
             f"{costs_on[group]:.2f}" if group in costs_on else "-",
             f"{costs_on.get(group, 0.0) - costs_off.get(group, 0.0):+.2f}"] for group in groups]
    total_off, total_on = sum(costs_off.values()), sum(costs_on.values())
    rows.append(["total", f"{total_off:.2f}", f"{total_on:.2f}", f"{total_on - total_off:+.2f}"])
    return rows


def tracing_cost_report(off: LinksReads, on: LinksReads, *, command: str, machine_facts: dict[str, str],
                        started: datetime, seconds: float, markdown: bool) -> str:
    table = markdown_table if markdown else text_table
    facts = "; ".join(f"{name} {value}" for name, value in machine_facts.items())
    parts = [f"Measured {started:%Y-%m-%d %H:%M} UTC by `{command}` in {seconds / 60:.1f} minutes: two "
             f"`delinkcious up` runs one after the other, tracing off and then on, on this machine: {facts}.",
             "", f"Tracing in the second run: {tracing_text(asdict(on.tracing) if on.tracing else None)}.", "",
             table(["GET /v1/links", "tracing off", "tracing on", "change"], tracing_cost_rows(off, on))]
    key = f"GET /v1/links@{LINKS_READ_RATE:g}"
    if key in off.cpu_per_request and key in on.cpu_per_request:
        parts += ["", f"CPU per request of GET /v1/links at {LINKS_READ_RATE:g}/s offered, ms, by process group "
                      f"(from the start of the load until the system was quiet again):", "",
                  table(["process group", "tracing off", "tracing on", "change"],
                        tracing_cost_group_rows(off, on, key))]
    notes = [f"tracing {mode}: {note}" for mode, run in (("off", off), ("on", on)) for note in run.notes]
    if notes:
        parts += ["", *(f"- {note}" for note in notes)]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------
# The command


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts and a few seconds per phase (the tests)")
    parser.add_argument("--base-url", help="a running system on this machine (127.0.0.1 or ::1) instead of `up`; "
                                           "what needs local access is skipped")
    parser.add_argument("--tracing", action="store_true",
                        help="the system exports its traces by OTLP/HTTP to a local sink while it is measured; "
                             "the run fails if no span arrives")
    parser.add_argument("--tracing-cost", action="store_true",
                        help="GET /v1/links only, with tracing off and then on (two `up` runs), side by side; "
                             "a full run writes them to the Tracing section of the report")
    parser.add_argument("--report", type=Path, help=f"the document whose results section (with --tracing-cost: its "
                                                    f"Tracing section) is rewritten (default: "
                                                    f"{DOCUMENT.relative_to(ROOT)} for a full run, none with --quick)")
    parser.add_argument("--chart", type=Path, help=f"where the SVG chart goes (default: "
                                                   f"{CHART.relative_to(ROOT)} for a full run, none with --quick)")
    parser.add_argument("--no-report", action="store_true", help="print the table only")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON here")
    return parser


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser()
    arguments = parser.parse_args(argv)
    if arguments.base_url:
        if arguments.tracing or arguments.tracing_cost:
            parser.error("--tracing and --tracing-cost start the system themselves: not with --base-url")
        load.check_loopback(arguments.base_url)
        arguments.base_url = arguments.base_url.rstrip("/")
    if arguments.tracing and arguments.tracing_cost:
        parser.error("--tracing-cost runs with tracing off and on by itself: not with --tracing")
    if arguments.tracing_cost and arguments.chart:
        parser.error("--tracing-cost draws no chart")
    if not arguments.quick and not arguments.no_report:
        arguments.report = arguments.report or DOCUMENT
        if not arguments.tracing_cost:
            arguments.chart = arguments.chart or CHART
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    # SIGTERM unwinds like Ctrl-C, through the finally that stops everything we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = "python -m bench" + "".join(f" {shlex.quote(part)}" for part in (argv or sys.argv[1:]))
    if arguments.tracing_cost:
        return compare_tracing(arguments, command)
    return run_benchmark(arguments, command)


def run_benchmark(arguments: argparse.Namespace, command: str) -> int:
    report = Report(command=command, machine=machine())
    started = time.perf_counter()
    with trace_sink(arguments.tracing) as sink, tempfile.TemporaryDirectory(prefix="delinkcious-bench-") as work_dir:
        benchmark = Benchmark(QUICK if arguments.quick else FULL, Path(work_dir), arguments.base_url, report, sink)
        try:
            benchmark.run()
        finally:
            benchmark.close()
        counts = sink.counts() if sink is not None else None
    benchmark.failed_phases += tracing_failures(counts)
    report.tracing = asdict(counts) if counts is not None else None
    report.duration_seconds = time.perf_counter() - started
    report.rows = benchmark.rows()
    report.floors = benchmark.floor_figures()
    report.loads = [asdict(result) for result in benchmark.loads.values()]
    report.cpu_per_request = benchmark.cpu_per_request
    report.notes += [f"phase failed: {failure}" for failure in benchmark.failed_phases]
    say("\n" + report.text())
    if arguments.json:
        arguments.json.write_text(json.dumps(report.as_json(), indent=1, default=str))
    if benchmark.failed_phases:
        say("\nnot writing the report: some phases failed")
        return 1
    if arguments.chart:
        arguments.chart.write_text(benchmark.chart())
        say(f"chart written to {arguments.chart}")
    if arguments.report:
        chart_name = arguments.chart.name if arguments.chart else None
        arguments.report.write_text(replace_results(arguments.report.read_text(), report.markdown(chart_name)))
        say(f"results written to {arguments.report}")
    return 0


def compare_tracing(arguments: argparse.Namespace, command: str) -> int:
    """--tracing-cost: GET /v1/links measured with tracing off, then on, each in an `up` of its own."""
    plan = QUICK if arguments.quick else FULL
    machine_facts, started_at, started = machine(), datetime.now(timezone.utc), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="delinkcious-bench-") as work_dir:
        say("=== tracing off")
        off = links_reads_in_one_up(plan, Path(work_dir) / "tracing-off", traced=False)
        say("=== tracing on")
        on = links_reads_in_one_up(plan, Path(work_dir) / "tracing-on", traced=True)
    seconds = time.perf_counter() - started
    report = dict(command=command, machine_facts=machine_facts, started=started_at, seconds=seconds)
    say("\n" + tracing_cost_report(off, on, markdown=False, **report))
    failures = [f"tracing {mode}: {failure}" for mode, run in (("off", off), ("on", on)) for failure in run.failures]
    for failure in failures:
        say(f"failed: {failure}")
    if arguments.json:
        arguments.json.write_text(json.dumps({
            "command": command, "machine": machine_facts, "started": started_at.isoformat(),
            "duration_seconds": seconds, "failures": failures, "off": off.as_json(), "on": on.as_json()},
            indent=1, default=str))
    if failures:
        say("\nnot writing the report: some phases failed")
        return 1
    if arguments.report:
        arguments.report.write_text(replace_results(arguments.report.read_text(),
                                                    tracing_cost_report(off, on, markdown=True, **report),
                                                    TRACING_BEGIN, TRACING_END))
        say(f"tracing figures written to {arguments.report}")
    return 0
