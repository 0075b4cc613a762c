"""Load phases: locust in a subprocess (`locust --headless -f bench/locustfile.py ... --csv`), at a constant
offered rate or as a closed loop, and what it measured.

How close to open loop: locust has no open-loop mode. Each user is a greenlet that sends one request, waits
for its answer, then waits until its next send is due (bench/locustfile.py paces each user on a fixed
schedule, locust's constant_throughput corrected for oversleeping, and gives each user its own slot in the
interval, so the sends are evenly spaced: a constant arrival rate). We give every user an interval of
USER_INTERVAL seconds (users = offered rate x USER_INTERVAL), so the offered rate holds, open loop, as long as
answers take less than that. A slower answer delays that user's next send (`late_sends`); past one interval
the user drops the sends it missed (`skipped_sends`): the achieved rate falls short, and as in any closed
system the waiting of requests not yet sent is not counted (coordinated omission), so p99 under overload
reads low. A phase without late or skipped sends was open loop.
"""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import percentile

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
USER_INTERVAL = 0.5  # seconds between two requests of one user
WARMUP_SECONDS = 1.0  # after all users started: connections are opened, not measured
MIN_USERS = 4
STOP_TIMEOUT = 12  # seconds for requests in flight at the stop to finish (each times out after 10)


@dataclass(frozen=True)
class Load:
    """One phase: which locust user class, what it sends and how hard."""

    name: str  # the figure, e.g. "GET /v1/links"
    user_class: str  # in bench/locustfile.py
    host: str  # base URL for HTTP classes (loopback only)
    offered_rate: float | None  # requests per second; None: closed loop
    seconds: float
    closed_loop_users: int = 32
    settings: dict[str, Any] = field(default_factory=dict)  # path, query, tokens, grpc_target, postgres_dsn...

    @property
    def users(self) -> int:
        if self.offered_rate is None:
            return self.closed_loop_users
        return max(MIN_USERS, math.ceil(self.offered_rate * USER_INTERVAL))


@dataclass(frozen=True)
class LoadResult:
    name: str
    offered_rate: float | None
    users: int
    seconds: float
    requests: int
    failures: int
    achieved_rate: float
    p50_ms: float
    p99_ms: float
    client_cpu_percent: float  # the locust process's CPU over the phase (100 = one core: the client was the limit)
    client_cpu_seconds: float  # its user+system CPU seconds, start-up and warm-up included
    answered_in_all: int = 0  # every request answered, warm-up and stop included (what CPU per request divides by)
    late_sends: int = 0  # sends that went out over 10 ms behind their schedule (a slow answer, or a busy client)
    skipped_sends: int = 0  # sends a user dropped because it fell more than its interval behind
    failure_kinds: dict[str, int] = field(default_factory=dict)
    locust_csv_requests: int | None = None  # the count in locust's own CSV (a snapshot up to a second old)

    @property
    def summary(self) -> str:
        offered = f"{self.offered_rate:.0f}/s" if self.offered_rate else "closed loop"
        kinds = ", ".join(f"{count} {kind}" for kind, count in self.failure_kinds.items())
        return (f"{self.name} [{offered}, {self.users} users, {self.seconds:.0f} s]: {self.achieved_rate:.1f}/s, "
                f"p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, {self.failures} errors"
                f"{f' ({kinds})' if kinds else ''}, {self.late_sends} sends late, {self.skipped_sends} skipped, "
                f"client CPU {self.client_cpu_percent:.0f}%")


class LoadFailed(RuntimeError):
    pass


def run_load(load: Load, work_dir: Path) -> LoadResult:
    """Run one phase and return what it measured; the locust process never outlives it."""
    check_loopback(load.host)
    directory = Path(tempfile.mkdtemp(prefix="locust-", dir=work_dir))
    samples_file = directory / "samples.json"
    config_file = directory / "config.json"
    # The file carries access tokens: readable by us only.
    config_file.touch(mode=0o600)
    config_file.write_text(json.dumps({
        "name": load.name, "samples_file": str(samples_file), "users": load.users, "warmup_seconds": WARMUP_SECONDS,
        "rate_per_user": (load.offered_rate / load.users) if load.offered_rate else None, **load.settings,
    }))
    csv_prefix = directory / "locust"
    run_time = math.ceil(WARMUP_SECONDS + load.seconds)
    command = [
        sys.executable, "-m", "locust", "--headless", "-f", str(LOCUSTFILE), load.user_class,
        # All users start at once; the locustfile spaces their sends evenly over the interval.
        "--host", load.host, "--users", str(load.users), "--spawn-rate", str(load.users),
        # Requests in flight at the stop may finish (bounded: each has a timeout of its own).
        "--run-time", f"{run_time}s", "--stop-timeout", str(STOP_TIMEOUT), "--reset-stats", "--only-summary",
        "--csv", str(csv_prefix), "--exit-code-on-error", "0", "--loglevel", "WARNING",
    ]  # fmt: skip
    environment = {**os.environ, "BENCH_LOCUST_CONFIG": str(config_file)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(command, env=environment, capture_output=True, text=True,
                               timeout=run_time + STOP_TIMEOUT + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0 or not samples_file.exists():
        raise LoadFailed(f"locust failed for {load.name} (exit {completed.returncode}):\n{completed.stderr[-3000:]}")
    client_cpu_seconds = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return _result(load, csv_prefix, json.loads(samples_file.read_text()), client_cpu_seconds, run_time)


def _result(load: Load, csv_prefix: Path, samples: dict[str, Any], client_cpu_seconds: float,
            run_time: float) -> LoadResult:
    """Every figure from our per-request samples (the requests sent in the measuring window; the achieved rate
    is how many of them there were per second): locust's CSV is a snapshot written once a second (up to a
    second stale at the end), its Requests/s divides by whole seconds and its percentiles are whole
    milliseconds. The CSV's request count is kept beside them as locust's own view."""
    latencies = sorted(samples["latencies_ms"])
    failures = int(samples["failures"])
    requests = len(latencies) + failures
    window = float(samples["window_seconds"])
    aggregated = _aggregated_row(Path(f"{csv_prefix}_stats.csv"))
    return LoadResult(
        name=load.name, offered_rate=load.offered_rate, users=load.users, seconds=load.seconds, requests=requests,
        failures=failures, achieved_rate=requests / window if window else 0.0, p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99), client_cpu_percent=client_cpu_seconds / run_time * 100,
        client_cpu_seconds=client_cpu_seconds, answered_in_all=int(samples.get("answered_in_all", requests)),
        late_sends=int(samples.get("late_sends", 0)), skipped_sends=int(samples.get("skipped_sends", 0)),
        failure_kinds=samples.get("failure_kinds", {}),
        locust_csv_requests=int(aggregated["Request Count"]) if aggregated else None,
    )


def _aggregated_row(stats_csv: Path) -> dict[str, str] | None:
    """The "Aggregated" row of locust's <prefix>_stats.csv: counts and the rate since the stats were reset."""
    try:
        with stats_csv.open(newline="") as handle:
            return next((row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"), None)
    except OSError:
        return None


def check_loopback(base_url: str) -> None:
    from urllib.parse import urlsplit

    host = urlsplit(base_url if "://" in base_url else f"tcp://{base_url}").hostname
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError(f"the benchmark only loads this machine's loopback address, not {host!r}")
