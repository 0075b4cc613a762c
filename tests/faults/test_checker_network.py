"""The checker's own network fails: every host it checks stops answering at once (as when its egress, proxy or
resolver is down). No link may be judged dead for it: the checks are inconclusive, the checker recognises its own
outage (readiness detail `checker_network`, metric `delinkcious_link_checker_outage`), and once the network is
back every link gets its real verdict. The hosts are on 127.0.0.2-4 (three different hosts on this machine)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
import requests

from tests.faults.conftest import Figures, System
from tests.support.jetstream import wait_until
from tests.support.web import Answering

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
LINKS_PER_HOST = 3


class Network:
    """Three web hosts that answer 200, or (while `down`) take every connection and never say a word."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.silent_connections = 0
        network = self

        class Handler(Answering):
            def handle(self) -> None:
                if not network.up.is_set():
                    network.silent_connections += 1
                    network.up.wait(30)  # holds the connection, answers nothing
                    return
                super().handle()

        self.servers = [ThreadingHTTPServer((host, 0), Handler) for host in HOSTS]
        for server in self.servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def urls(self) -> list[str]:
        return [f"http://{host}:{server.server_address[1]}" for host, server in zip(HOSTS, self.servers, strict=True)]

    def close(self) -> None:
        self.up.set()  # releases the held connections
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def network() -> Iterator[Network]:
    network = Network()
    try:
        yield network
    finally:
        network.close()


def outage_declared(system: System) -> bool:
    _, report = system.readiness("link-checker")
    check = next((check for check in report.get("checks", []) if check["name"] == "checker_network"), {})
    return check.get("ok") is False


def outage_metric(system: System) -> float | None:
    text = requests.get(f"{system.service_url('link-checker')}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("delinkcious_link_checker_outage{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_an_outage_of_the_checkers_network_marks_no_link_dead(system: System, network: Network, figures: Figures):
    user = system.new_user("checker-owner")
    urls = [f"{base}/page/{number}" for base in network.urls() for number in range(LINKS_PER_HOST)]
    added_at = time.monotonic()
    for url in urls:
        added = user.call("POST", "/v1/links", json={"url": url, "title": "behind a dead network"})
        assert added.status_code == 201, added.text

    def statuses() -> dict[str, str]:
        return {link["url"]: link["status"] for link in user.links() if link["url"] in urls}

    assert wait_until(lambda: outage_declared(system), timeout=60), (system.readiness("link-checker"),
                                                                      statuses(), network.silent_connections)
    declared_after = time.monotonic() - added_at
    assert outage_metric(system) == 1.0
    assert network.silent_connections >= len(HOSTS)
    time.sleep(3)  # the checker keeps going while it is down: still nothing judged
    while_down = statuses()
    assert set(while_down.values()) == {"pending"}, while_down
    assert system.ready("link-checker")  # degraded, not taken out of service: there is nothing to fail over to

    network.up.set()
    back_at = time.monotonic()
    assert wait_until(lambda: set(statuses().values()) == {"valid"}, timeout=60), statuses()
    all_valid_after = time.monotonic() - back_at
    assert wait_until(lambda: not outage_declared(system), timeout=30)
    assert outage_metric(system) == 0.0
    figures.record("checker_network_down", links=len(urls), marked_invalid=0, outage_declared_after_s=round(
        declared_after, 1), silent_connections=network.silent_connections,
        all_valid_after_network_back_s=round(all_valid_after, 1))
