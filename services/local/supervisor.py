"""The processes of a local run, kept running. Each service runs as a child process with the environment
the runtime gives it, is restarted after it exits with a delay that doubles up to a cap, is probed on
/healthz/readiness (on its admin port when it has one), and is stopped together with the others under
one deadline, then killed (SIGKILL) if it has not stopped. The servers (PostgreSQL, NATS, Redis, the
identity provider) are restarted the same way when they crash, without holding up the supervision of
the rest while one starts again."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from delinkcious.local.processes import ChildProcess
from delinkcious.local.servers.base import Server, ServerError, answers_ok, reachable_address, url_host

log = logging.getLogger(__name__)

# How long services have to stop after SIGTERM before they are killed. A service gives back the work it can
# redo at once and finishes the rest; this bounds one whose drain would run longer (the whole of `up`'s stop
# stays under the 30 s a container platform gives).
SERVICE_STOP_TIMEOUT = 15.0
# How long a restarting server has to become ready before it is killed and tried again.
SERVER_RESTART_TIMEOUT = 60.0


@dataclass
class RestartBackoff:
    """Delay before restarting a crashed child: 1 s doubling up to 30 s, reset once it ran 60 s."""

    initial: float = 1.0
    maximum: float = 30.0
    stable_after: float = 60.0
    _next: float = 1.0

    def delay_after(self, uptime: float) -> float:
        if uptime >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


class SupervisedService:
    """One service: its child process, restarts and readiness."""

    def __init__(self, name: str, command: Sequence[str], environment: Mapping[str, str], pid_file: Path) -> None:
        self.name = name
        self.command = list(command)
        self.environment = dict(environment)
        self.host = environment["HOST"]
        self.port = int(environment["PORT"])
        # /healthz lives on ADMIN_PORT when the service separates it from its public port.
        self.admin_port = int(environment["ADMIN_PORT"]) if environment.get("ADMIN_PORT") else None
        self.pid_file = pid_file
        self.ready = False
        self._child: ChildProcess | None = None
        self._started_at = 0.0
        self._restart_at: float | None = None
        self._backoff = RestartBackoff()

    @property
    def address(self) -> str:
        """The public address, as shown in the status table."""
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def ops_port(self) -> int:
        """Where /healthz/* and /metrics answer: ADMIN_PORT when the service has one, else PORT."""
        return self.admin_port if self.admin_port is not None else self.port

    @property
    def readiness_url(self) -> str:
        return f"http://{reachable_address(self.host, self.ops_port)}/healthz/readiness"

    def start(self) -> None:
        self._child = ChildProcess(self.command, pid_file=self.pid_file, env=self.environment, name=self.name)
        # A leftover of a killed `up` gets as long to stop as a service does when `up` stops it.
        self._child.start(leftover_timeout=SERVICE_STOP_TIMEOUT)
        self._started_at = time.monotonic()
        self._restart_at = None

    def supervise(self, now: float) -> None:
        """Notice an exit and schedule a restart; restart when it is due."""
        if self._child is not None and (exit_code := self._child.poll()) is not None:
            self._child.forget_pid_file()
            self._child = None
            self.ready = False
            delay = self._backoff.delay_after(now - self._started_at)
            log.warning("%s exited with code %d, restarting in %.0f s", self.name, exit_code, delay)
            self._restart_at = now + delay
        if self._restart_at is not None and now >= self._restart_at:
            self.start()

    def check_readiness(self) -> bool:
        running = self._child is not None and self._child.running
        self.ready = running and answers_ok(self.readiness_url)
        return self.ready

    def signal_stop(self) -> None:
        self._restart_at = None
        if self._child is not None:
            self._child.signal_stop()

    def wait_stopped(self, timeout: float) -> None:
        if self._child is not None:
            self._child.wait_stopped(timeout)
            self._child = None


def check_all_ready(services: Sequence[SupervisedService]) -> bool:
    """Probe every service not yet known to be ready; True once all of them are."""
    # A list, not a generator: every service is probed on every call.
    return all([service.ready or service.check_readiness() for service in services])


def stop_services(services: Sequence[SupervisedService], timeout: float = SERVICE_STOP_TIMEOUT) -> None:
    """Ask every service to stop at once, then wait for all of them under one deadline."""
    for service in services:
        service.signal_stop()
    deadline = time.monotonic() + timeout
    for service in services:
        service.wait_stopped(max(0.0, deadline - time.monotonic()))


class SupervisedServer:
    """A server `up` started: restarted after it exits (a crash, an OOM kill) with the services' back-off.

    A restart only launches the process; each `supervise` call then probes it once, so the services are
    still supervised (and a stop is still honoured) while the server starts again."""

    def __init__(self, server: Server, restart_timeout: float = SERVER_RESTART_TIMEOUT) -> None:
        self.server = server
        self.restart_timeout = restart_timeout
        self._backoff = RestartBackoff()
        self._started_at = time.monotonic()
        self._restart_at: float | None = None
        self._starting_until: float | None = None  # a relaunched process is not ready yet

    @property
    def name(self) -> str:
        return self.server.name

    def supervise(self, now: float) -> None:
        if self._restart_at is None and (exit_code := self.server.exit_code()) is not None:
            self.server.wait_stopped(0)  # reaped, pid file forgotten, cleaned up after
            what = "exited while starting again" if self._starting_until is not None else "exited"
            self._schedule_restart(now, f"{self.name} {what} with code {exit_code}")
        elif self._starting_until is not None:
            if self.server.ready_now():
                self._starting_until = None
                log.info("%s is ready again on %s", self.name, self.server.address)
            elif now > self._starting_until:
                self.server.stop(timeout=5)
                self._schedule_restart(now, f"{self.name} was not ready {self.restart_timeout:.0f} s after a restart")
        if self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            log.info("restarting %s on %s", self.name, self.server.address)
            try:
                self.server.launch()
            except (ServerError, OSError) as error:
                self._schedule_restart(now, f"could not restart {self.name}: {error}")
                return
            self._started_at = now
            self._starting_until = now + self.restart_timeout

    def _schedule_restart(self, now: float, reason: str) -> None:
        self._starting_until = None
        delay = self._backoff.delay_after(now - self._started_at)
        log.warning("%s, restarting in %.0f s", reason, delay)
        self._restart_at = now + delay
