"""`delinkcious up` run by a test: a subprocess whose lines are collected, on free ports in a data directory of the
test's, and the checks made on what it started (alive, listening)."""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
from delinkcious.local.servers import free_port
from delinkcious.local.wiring import SERVER_VARIABLES

# What a clean stop never prints.
NOISE = ("Traceback", "Task was destroyed", "Event loop is closed", "Exception in thread", "was never awaited")


class UpProcess:
    """`up` in a subprocess, its stdout lines collected by a thread."""

    def __init__(self, command: list[str], environment: dict[str, str]):
        # stderr (the runtime's [up] messages) joins stdout: one ordered transcript, one reader.
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for_line(self, prefix: str, timeout: float = 60) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line starting with {prefix!r}; got {self.output}") from None
            self.output.append(line)
            if line.startswith(prefix):
                return line

    def json_lines(self) -> list[dict]:
        """Every JSON log line the services wrote so far (their lines reach `up`'s stdout as they are)."""
        while not self.lines.empty():
            self.output.append(self.lines.get_nowait())
        parsed = []
        for line in self.output:
            if line.startswith("{"):
                try:
                    parsed.append(json.loads(line))
                except ValueError:
                    continue  # two processes' lines interleaved mid-line
        return parsed

    def stop(self) -> tuple[int, str]:
        """SIGTERM, then the exit code and the whole transcript."""
        self.process.send_signal(signal.SIGTERM)
        self.wait_for_line("delinkcious stopped")
        return self.process.wait(60), "\n".join(self.output)


def inherited_environment() -> dict[str, str]:
    """This process's environment without the variables that would point `up` at other servers."""
    return {name: value for name, value in os.environ.items() if name not in SERVER_VARIABLES}


def is_alive(process: psutil.Process) -> bool:
    """Running, not a zombie (an orphan's zombie may wait for a reaper that never comes; it holds nothing)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def free_ports() -> dict[str, int]:
    return {name: free_port() for name in ("postgres", "nats", "redis", "oidc", "link", "user", "social-graph",
                                           "news", "news-grpc", "link-checker", "api-gateway", "api-gateway-admin")}


def start_up(data_dir: Path, ports: dict[str, int], **environment: str) -> UpProcess:
    command = [
        sys.executable, "-m", "delinkcious.cli", "up", "--data-dir", str(data_dir),
        "--postgres-port", str(ports["postgres"]), "--nats-port", str(ports["nats"]),
        "--redis-port", str(ports["redis"]), "--oidc-port", str(ports["oidc"]), "--log-format", "json",
    ]  # fmt: skip
    return UpProcess(command, {**inherited_environment(), "LINK__PORT": str(ports["link"]),
                               "USER__PORT": str(ports["user"]), "SOCIAL_GRAPH__PORT": str(ports["social-graph"]),
                               "NEWS__PORT": str(ports["news"]), "NEWS__GRPC_PORT": str(ports["news-grpc"]),
                               "LINK_CHECKER__PORT": str(ports["link-checker"]),
                               "API_GATEWAY__PORT": str(ports["api-gateway"]),
                               "API_GATEWAY__ADMIN_PORT": str(ports["api-gateway-admin"]),
                               "LINK__MAX_LINKS_PER_USER": "3", **environment})
