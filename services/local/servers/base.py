"""What the local servers have in common, and the network helpers the runtime shares with them.

A server is a child process that keeps its data, log and pid file in one data directory: `Server.start`
first stops a leftover of a killed predecessor, then starts the server and polls a cheap readiness
probe until it answers. Alongside are the helpers every server (and the service supervisor) uses:
free ports, hosts as they appear in URLs, the address this machine reaches a listening host at, the
one-line and HTTP readiness probes, and how a server's executable is found.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from delinkcious.local.processes import ChildProcess, RunAs, stop_leftover

log = logging.getLogger(__name__)

_POLL_INTERVAL = 0.05
_PROBE_TIMEOUT = 1.0
_LOG_TAIL_LINES = 30
# A server listening on a wildcard address is reached on the loopback address of the same family.
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


class ServerError(RuntimeError):
    """A server could not be prepared or did not become ready."""


class StartAbandoned(ServerError):
    """Asked to stop while a server was starting."""


# --------------------------------------------------------------------------------------
# Addresses and probes


# Every port free_port handed out in this process: callers pick several ports before anything binds one, and the
# OS may offer a port again as long as nothing listens on it (a service was once given PostgreSQL's port).
_HANDED_OUT: set[tuple[str, int]] = set()
_HANDING_OUT = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it) and that this process never handed out."""
    family, kind, protocol, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    with _HANDING_OUT:
        for _ in range(1000):
            with socket.socket(family, kind, protocol) as probe:
                probe.bind(address)
                port = int(probe.getsockname()[1])
            if (host, port) not in _HANDED_OUT:
                _HANDED_OUT.add((host, port))
                return port
    raise OSError(f"no free port on {host} that was not handed out already")


def url_host(host: str) -> str:
    """`host` as it must appear in a URL (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def reachable_address(host: str, port: int) -> str:
    """`host:port` (URL form) where this machine reaches a server that listens on `host`."""
    return f"{url_host(_WILDCARD_HOSTS.get(host, host))}:{port}"


def first_line_answered(host: str, port: int, request: bytes | None) -> bytes | None:
    """Connect, optionally send `request`, and return the first line answered (None if unreachable)."""
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT) as connection:
            if request is not None:
                connection.sendall(request)
            return connection.makefile("rb").readline()
    except OSError:
        return None


def answers_ok(url: str) -> bool:
    """Whether a GET of `url` answers 200 (False when unreachable or answering anything else)."""
    try:
        with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False  # HTTPError (e.g. 503) is a URLError too


# --------------------------------------------------------------------------------------
# Executables


def find_executable(name: str, candidates: list[Callable[[], Path | None]]) -> Path:
    """The first candidate location that holds an executable file."""
    for candidate in candidates:
        path = candidate()
        if path is not None and path.is_file() and os.access(path, os.X_OK):
            return path
    raise ServerError(f"cannot find the {name} executable; is the 'local' extra installed?")


def on_path(name: str) -> Callable[[], Path | None]:
    return lambda: Path(found) if (found := shutil.which(name)) else None


def next_to_python(name: str) -> Callable[[], Path | None]:
    return lambda: Path(sys.executable).parent / name


def in_package(package: str, relative: str) -> Callable[[], Path | None]:
    """`relative` inside an installed package, located without importing it."""

    def locate() -> Path | None:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / relative

    return locate


# --------------------------------------------------------------------------------------
# Common shape of the servers


class Server(ABC):
    """A server binary run as a child process that keeps its state in `data_dir`."""

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        # Chosen once, so that stop()/start() keep the address clients already know.
        self.port = port or free_port(host)
        self.log_path = self.data_dir / f"{self.name}.log"
        self.pid_file = self.data_dir / f"{self.name}.pid"
        self._child: ChildProcess | None = None

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    @property
    def pid(self) -> int | None:
        return self._child.pid if self.running and self._child is not None else None

    @property
    def address(self) -> str:
        return f"{url_host(self.host)}:{self.port}"

    def start(self, timeout: float = 30, abandon: Callable[[], bool] | None = None) -> None:
        """Start the server (no-op if running) and return once it serves clients. While it starts, `abandon`
        is asked every few milliseconds whether to give up (StartAbandoned, the server stopped)."""
        if self.running:
            return
        self.launch(timeout)
        try:
            self._wait_until_ready(time.monotonic() + timeout, abandon)
        except BaseException:
            self.stop()
            raise
        log.info("%s is ready on %s", self.name, self.address)

    def launch(self, leftover_timeout: float = 30) -> None:
        """Start the server's process and return at once (`ready_now` tells when it serves clients)."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A server left running by a killed predecessor goes first: it holds the port and the data.
        stop_leftover(self.pid_file, self.stop_signal, leftover_timeout)
        self._prepare()
        self._child = ChildProcess(
            self._command(),
            pid_file=self.pid_file,
            stop_signal=self.stop_signal,
            env=self._environment(),
            cwd=self.data_dir,
            log_path=self.log_path,
            run_as=self._run_as(),
            name=self.name,
        )
        self._child.start(leftover_timeout=leftover_timeout)

    def exit_code(self) -> int | None:
        """The exit code once the process has exited (crashed, or killed), else None."""
        return self._child.poll() if self._child is not None else None

    def ready_now(self) -> bool:
        """Whether the running process serves clients now (one cheap probe)."""
        return self.running and self._is_ready()

    def stop(self, timeout: float = 30) -> None:
        """Stop the server gracefully (SIGKILL after `timeout`); no-op if not running."""
        self.signal_stop()
        self.wait_stopped(timeout)

    def signal_stop(self) -> None:
        """Ask the server to stop; returns at once."""
        if self._child is not None:
            self._child.signal_stop()

    def wait_stopped(self, timeout: float) -> None:
        """Wait up to `timeout` for a server asked to stop, then SIGKILL it (and say so)."""
        if self._child is None:
            return
        self._child.wait_stopped(timeout)
        self._child = None
        self._after_stop()

    def _wait_until_ready(self, deadline: float, abandon: Callable[[], bool] | None = None) -> None:
        assert self._child is not None
        while True:
            if abandon is not None and abandon():
                raise StartAbandoned(f"{self.name} was stopped while starting")
            exit_code = self._child.poll()
            if exit_code is not None:
                raise ServerError(f"{self.name} exited with code {exit_code} while starting{self._log_tail()}")
            if self._is_ready():
                return
            if time.monotonic() > deadline:
                raise ServerError(f"{self.name} was not ready in time{self._log_tail()}")
            time.sleep(_POLL_INTERVAL)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return ""
        return f"; last lines of {self.log_path}:\n" + "\n".join(lines)

    def _prepare(self) -> None:
        """Anything needed before the first start (directories, initialisation)."""

    def _after_stop(self) -> None:
        """Anything to clean up once the process is gone."""

    def _environment(self) -> dict[str, str] | None:
        return None  # inherit ours

    def _run_as(self) -> RunAs | None:
        return None

    @abstractmethod
    def _command(self) -> list[str]: ...

    @abstractmethod
    def _is_ready(self) -> bool:
        """One cheap readiness probe; False while the server is still starting."""
