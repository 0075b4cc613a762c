"""The system under test: `delinkcious up` in a temporary data directory on free ports, with the
gateway's rate limits raised for the benchmark and tracing off or exporting to a given endpoint; and what
only local access can measure about it (its services' memory and CPU time, whether it has gone quiet, where
its databases are)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil
from delinkcious.catalogue import SERVICES
from delinkcious.local.servers import free_port
from delinkcious.local.wiring import SERVER_VARIABLES, override_prefix

READY_LINE = "delinkcious is up"
# Every request of the benchmark comes from one address and a handful of users: far above any offered rate,
# but the limiter still counts every request in Redis, so its cost stays in the figures.
RAISED_RATE_LIMITS = {
    "API_GATEWAY__RATE_LIMIT_PER_ADDRESS": "10000000/minute",
    "API_GATEWAY__RATE_LIMIT_PER_USER": "10000000/minute",
}
UP_GROUP = "up (supervisor)"
# The servers `up` starts, by the name of the process that leads each one's process group.
SERVER_GROUPS = {"postgres": "postgres", "nats-server": "nats", "redis-server": "redis"}
OIDC_EXECUTABLE = "oidc-provider-mock"  # a Python script: its process is named after the interpreter
# OpenTelemetry's standard variables all begin so: none is inherited, so tracing is on only when asked for, and
# then with the SDK's defaults (batching, sampling every request).
OTEL_PREFIX = "OTEL_"


class UpFailed(RuntimeError):
    """`up` did not come up."""


class LocalSystem:
    """One `delinkcious up` run in `data_dir`, started by `start()` and always stopped by `stop()`."""

    def __init__(self, data_dir: Path, tracing_endpoint: str | None = None) -> None:
        self.data_dir = data_dir
        self.tracing_endpoint = tracing_endpoint  # OTEL_EXPORTER_OTLP_ENDPOINT; None: tracing off
        self.server_ports = {name: free_port() for name in ("postgres", "nats", "redis", "oidc")}
        self.service_ports: dict[str, int] = {}
        self.ready_seconds: float | None = None
        self.output: list[str] = []  # up's transcript so far
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()  # None: up closed its output

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.service_ports['api-gateway']}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.server_ports['redis']}/0"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.server_ports['nats']}"

    def database_dsn(self, service: str) -> str:
        """A libpq DSN of `service`'s own database, with the password `up` keeps in its secrets directory."""
        password = (self.data_dir / "secrets" / "postgres" / service).read_text().strip()
        return (f"host=127.0.0.1 port={self.server_ports['postgres']} dbname={service} user={service} "
                f"password={password}")

    def start(self, timeout: float) -> float:
        """Start `up` and wait for its ready line; the seconds it took."""
        environment = {name: value for name, value in os.environ.items()
                       if name not in SERVER_VARIABLES and not name.startswith(OTEL_PREFIX)}
        if self.tracing_endpoint is not None:
            environment["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.tracing_endpoint
        for facts in SERVICES:
            prefix = override_prefix(facts.name)
            self.service_ports[facts.name] = free_port()
            environment[f"{prefix}PORT"] = str(self.service_ports[facts.name])
            if facts.admin_port is not None:
                environment[f"{prefix}ADMIN_PORT"] = str(free_port())
            if facts.grpc_port is not None:
                environment[f"{prefix}GRPC_PORT"] = str(free_port())
        environment.update(RAISED_RATE_LIMITS)
        command = [
            sys.executable, "-m", "delinkcious.cli", "up", "--data-dir", str(self.data_dir), "--log-format", "json",
            "--postgres-port", str(self.server_ports["postgres"]), "--nats-port", str(self.server_ports["nats"]),
            "--redis-port", str(self.server_ports["redis"]), "--oidc-port", str(self.server_ports["oidc"]),
        ]  # fmt: skip
        started = time.perf_counter()
        # stderr (up's own [up] lines) joins stdout: one transcript, read by one thread.
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         env=environment)
        threading.Thread(target=self._collect, daemon=True).start()
        line = self._wait_for_line(READY_LINE, timeout)
        if line != READY_LINE:  # no line in time, up exited, or "delinkcious is up (not ready: ...)"
            raise UpFailed(f"`delinkcious up` did not come up ({line!r}); its last lines:\n" + self.transcript())
        self.ready_seconds = time.perf_counter() - started
        return self.ready_seconds

    def stop(self, timeout: float = 90.0) -> int | None:
        """SIGTERM, wait for `up` to stop its services and servers; SIGKILL what is left after `timeout`."""
        if self._process is None or self._process.poll() is not None:
            return None if self._process is None else self._process.returncode
        process_tree = self._process_tree()
        self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            for process in [*process_tree, psutil.Process(self._process.pid)]:
                try:
                    process.kill()
                except psutil.Error:
                    pass
            return self._process.wait(10)

    def transcript(self, last: int = 40) -> str:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.output.append(line)
        return "\n".join(self.output[-last:])

    def _collect(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _wait_for_line(self, prefix: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:  # up exited
                return None
            self.output.append(line)
            if line.startswith(prefix):
                return line
        return None

    def _process_tree(self) -> list[psutil.Process]:
        try:
            assert self._process is not None
            return psutil.Process(self._process.pid).children(recursive=True)
        except psutil.Error:
            return []

    def service_leader(self, service: str) -> int | None:
        """The pid of a service's process (the leader of its process group), from the pid file `up` keeps."""
        try:
            return int((self.data_dir / "run" / f"{service}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def memory(self) -> dict[str, Memory]:
        """PSS and RSS of every service's process group."""
        usage = {}
        for facts in SERVICES:
            leader = self.service_leader(facts.name)
            if leader is not None:
                usage[facts.name] = group_memory(leader)
        return usage

    def cpu_seconds_by_group(self) -> dict[str, float]:
        """User and system CPU seconds so far of every process in up's tree, summed by process group (each
        service and server runs in a group of its own) and named after the service or server leading it.

        The CPU of children already reaped counts too (in their parent's), so a short-lived process and a
        worker recycled between two readings are not lost; a process that vanishes mid-read is skipped."""
        if self._process is None:
            return {}
        try:
            up = psutil.Process(self._process.pid)
            processes = [up, *self._process_tree()]
            up_group = os.getpgid(up.pid)  # the benchmark's own group: up is not started in a session of its own
        except (psutil.Error, ProcessLookupError):
            return {}
        service_leaders = {leader: facts.name for facts in SERVICES
                           if (leader := self.service_leader(facts.name)) is not None}
        names: dict[int, str] = {up_group: UP_GROUP, **service_leaders}
        seconds: dict[str, float] = {}
        for process in processes:
            try:
                group = os.getpgid(process.pid)
                if group not in names:
                    names[group] = server_group_name(psutil.Process(group))
                times = process.cpu_times()
            except (psutil.Error, ProcessLookupError):
                continue
            name = names[group]
            seconds[name] = (seconds.get(name, 0.0) + times.user + times.system + times.children_user
                             + times.children_system)
        return seconds

    def settle(self, quiet_cpu_percent: float, longest: float) -> float:
        """Wait until the whole system (up, its servers and services) uses less than `quiet_cpu_percent` of one
        core over half a second, at most `longest` seconds: what one phase set off (checks of saved links,
        feeds being written) must not be measured in the next. The seconds waited."""
        if self._process is None:
            return 0.0
        return wait_until_quiet(lambda: [psutil.Process(self._process.pid), *self._process_tree()],
                                quiet_cpu_percent, longest)


@dataclass(frozen=True)
class Memory:
    pss_mb: float
    rss_mb: float
    processes: int


def group_memory(leader: int) -> Memory:
    """PSS and RSS summed over the process group led by `leader` (a gunicorn master and its workers)."""
    pss = rss = count = 0
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) != leader:
                continue
            info = process.memory_full_info()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        pss += getattr(info, "pss", info.rss)  # PSS needs /proc/<pid>/smaps_rollup (Linux)
        rss += info.rss
        count += 1
    return Memory(pss_mb=pss / 2**20, rss_mb=rss / 2**20, processes=count)


def server_group_name(leader: psutil.Process) -> str:
    """A short, stable name of the server whose process group `leader` leads (its process name otherwise)."""
    name = leader.name()
    if name in SERVER_GROUPS:
        return SERVER_GROUPS[name]
    if any(Path(part).name == OIDC_EXECUTABLE for part in leader.cmdline()[:2]):  # [python, script, ...]
        return "oidc"
    return name


def wait_until_quiet(processes: Callable[[], list[psutil.Process]], quiet_cpu_percent: float,
                     longest: float) -> float:
    """Poll the CPU time of the processes `processes()` returns until they are quiet (see LocalSystem.settle)."""
    started = time.monotonic()
    while time.monotonic() - started < longest:
        watched = processes()
        before = _cpu_seconds(watched)
        time.sleep(0.5)
        if (_cpu_seconds(watched) - before) / 0.5 * 100 < quiet_cpu_percent:
            break
    return time.monotonic() - started


def _cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total
