"""The gateway under gunicorn stopping gracefully while clients keep sending: every request it accepted is
answered. A client that connects after the gateway stopped listening is refused (ECONNREFUSED: nothing was sent,
another instance can take it); none may have its request sent and then see the connection reset or closed without
an answer, whether it came on a fresh connection (waiting in the listener's queue) or on a kept-alive one."""
from __future__ import annotations

import errno
import http.client
import signal
import socket
import threading
import time
from typing import Any

from tests.support.services import unique_username

CLIENTS = 8
LOAD_LIMIT_S = 20.0  # every client stops by then, whatever happens


class Outcomes:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answered: dict[int, int] = {}
        self.refused = 0
        self.lost: list[str] = []

    def record(self, kind: str, detail: Any = None) -> None:
        with self.lock:
            if kind == "answered":
                self.answered[detail] = self.answered.get(detail, 0) + 1
            elif kind == "refused":
                self.refused += 1
            else:
                self.lost.append(detail)


def send(connection: http.client.HTTPConnection, headers: dict[str, str]) -> int:
    connection.request("GET", "/v1/me", headers=headers)
    response = connection.getresponse()
    response.read()
    if response.getheader("Connection", "").lower() == "close":
        connection.close()
    return response.status


def client_loop(port: int, headers: dict[str, str], keep_alive: bool, until: float, outcomes: Outcomes,
                stopped: threading.Event) -> None:
    """Requests back to back until the gateway refuses connections (it has stopped) or the time is up. With
    `keep_alive` one connection is reused for as long as the gateway keeps it open."""
    connection: http.client.HTTPConnection | None = None
    while time.monotonic() < until:
        if connection is None or connection.sock is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            try:
                connection.connect()
            except ConnectionRefusedError:
                outcomes.record("refused")
                if stopped.is_set():
                    return
                time.sleep(0.01)
                continue
        request_headers = headers if keep_alive else {**headers, "Connection": "close"}
        try:
            outcomes.record("answered", send(connection, request_headers))
        except (OSError, http.client.HTTPException) as error:
            # The request was written (or its writing failed) on a connection the gateway had accepted into its
            # queue or kept alive: this is what must never happen.
            code = errno.errorcode.get(getattr(error, "errno", None) or 0, "")
            outcomes.record("lost", f"{'keep-alive' if keep_alive else 'fresh'}: {type(error).__name__} {code}")
        finally:
            if not keep_alive and connection is not None:
                connection.close()
                connection = None
        if connection is not None and connection.sock is None:
            connection = None


def test_a_gateway_stopping_under_load_answers_every_request_it_accepted(served_gateway, internal):
    user = unique_username()
    internal.answer("POST", "/v1/tokens/verify", 200, {"user": {"username": user}, "token": {}})
    internal.answer("GET", f"/v1/users/{user}", 200, {"username": user})
    headers = {"Authorization": "Bearer dlk_stop"}
    served = served_gateway(RATE_LIMIT_PER_USER="100000/minute", RATE_LIMIT_PER_ADDRESS="100000/minute",
                            WEB_THREADS="4", GRACEFUL_TIMEOUT="10")
    outcomes, stopped = Outcomes(), threading.Event()
    try:
        until = time.monotonic() + LOAD_LIMIT_S
        clients = [threading.Thread(target=client_loop, daemon=True,
                                    args=(served.port, headers, index % 2 == 0, until, outcomes, stopped))
                   for index in range(CLIENTS)]
        for client in clients:
            client.start()
        time.sleep(1.5)
        answered_before_stop = sum(outcomes.answered.values())
        served.process.send_signal(signal.SIGTERM)
        stopped.set()
        assert served.process.wait(30) == 0, served.logs()[-3000:]
        for client in clients:
            client.join(LOAD_LIMIT_S + 5)
    finally:
        served.kill()
    assert answered_before_stop > 50, "the load did not get going"
    assert outcomes.lost == [], f"{len(outcomes.lost)} accepted requests lost: {outcomes.lost[:5]}"
    assert set(outcomes.answered) == {200}, outcomes.answered
    assert outcomes.refused >= CLIENTS // 2  # the fresh-connection clients ended on a refused connection
    with socket.socket() as probe:  # and the port is free again: nothing of the gateway lives on
        assert probe.connect_ex(("127.0.0.1", served.port)) != 0
