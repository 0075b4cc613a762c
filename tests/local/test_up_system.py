"""`delinkcious up` with the real services: it starts, reports ready, serves, stops cleanly, and a
second `up` on the same data directory finds everything as it was; a crashed server is restarted and the
system is ready again; a stop with a link check waiting on a silent host is over within 30 s."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from delinkcious.contracts.events import LINK_ADDED, LINKS_STREAM
from delinkcious.local.processes import recorded_process

from tests.support.jetstream import read_events, wait_until
from tests.support.up import NOISE, free_ports, start_up
from tests.support.web import web_hosts as hosts

SERVICES = ("link", "user", "social-graph", "news", "link-checker", "api-gateway")


def test_up_serves_stops_and_restarts_on_the_same_data(tmp_path):
    data_dir = tmp_path / "data"
    ports = free_ports()
    links_url = f"http://127.0.0.1:{ports['link']}/v1/users/ann/links"

    first = start_up(data_dir, ports)
    try:
        first.wait_for_line("delinkcious is up", timeout=120)
        token = (data_dir / "secrets" / "callers" / "developer").read_text().strip()
        headers = {"Delinkcious-Caller-Token": token}
        response = requests.post(links_url, json={"url": "https://kept.example", "title": "Kept", "tags": ["x"]},
                                 headers=headers, timeout=10)
        assert response.status_code == 201, response.text
        for index in range(2):
            requests.post(links_url, json={"url": f"https://more.example/{index}", "title": "t"}, headers=headers,
                          timeout=10)
        # The per-service override reached the link service: its quota is 3.
        over = requests.post(links_url, json={"url": "https://over.example", "title": "t"}, headers=headers,
                             timeout=10)
        assert over.status_code == 409 and over.json()["code"] == "quota_exceeded"

        # user and social-graph run too, and social-graph finds users through the user service.
        user_url, social_url = (f"http://127.0.0.1:{ports[name]}" for name in ("user", "social-graph"))
        for login in ("ann", "bob"):
            created = requests.post(f"{user_url}/v1/logins", json={"provider": "github", "subject": login,
                                                                   "login": login}, headers=headers, timeout=10)
            assert created.status_code in (200, 201), created.text
        follow = requests.post(f"{social_url}/v1/users/ann/following", json={"followed": "bob"}, headers=headers,
                               timeout=10)
        assert follow.status_code in (200, 201), follow.text
    finally:
        code, transcript = first.stop()
    assert code == 0, transcript
    rows = [line.split() for line in first.output]
    for service in ("link", "user", "social-graph", "news", "link-checker", "api-gateway"):
        assert [service, f"http://127.0.0.1:{ports[service]}", "yes"] in rows
    assert token not in transcript

    second = start_up(data_dir, ports)
    try:
        second.wait_for_line("delinkcious is up", timeout=120)
        listed = requests.get(links_url, headers=headers, params={"tag": "x"}, timeout=10).json()
        assert [link["url"] for link in listed["links"]] == ["https://kept.example"]
        events = read_events(f"nats://127.0.0.1:{ports['nats']}", LINKS_STREAM.name, LINK_ADDED)
        assert sorted(event["url"] for event in events if event["author"] == "ann") == [
            "https://kept.example", "https://more.example/0", "https://more.example/1"]
        following = requests.get(f"http://127.0.0.1:{ports['social-graph']}/v1/users/ann/following",
                                 headers=headers, timeout=10).json()
        assert following["following"] == ["bob"]
    finally:
        code, transcript = second.stop()
    assert code == 0, transcript


@pytest.fixture
def web_hosts() -> Iterator[dict[str, Any]]:
    with hosts() as found:
        yield found


def readiness(port: int) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz/readiness", timeout=2).status_code
    except requests.RequestException:
        return 0


def test_up_restarts_crashed_servers_and_stops_in_time_with_a_check_in_flight(tmp_path, web_hosts):
    data_dir = tmp_path / "data"
    ports = free_ports()
    ops_ports = {**{name: ports[name] for name in SERVICES}, "api-gateway": ports["api-gateway-admin"]}
    links_url = f"http://127.0.0.1:{ports['link']}/v1/users/ann/links"
    up = start_up(data_dir, ports, LINK_CHECKER__LINK_CHECKER_ALLOW_PRIVATE_ADDRESSES="true",
                  LINK_CHECKER__LINK_CHECKER_TIMEOUT="30")
    try:
        up.wait_for_line("delinkcious is up", timeout=120)
        headers = {"Delinkcious-Caller-Token": (data_dir / "secrets" / "callers" / "developer").read_text().strip()}

        # A crashed PostgreSQL, NATS or Redis is restarted, and every service is ready again.
        for server in ("postgres", "nats", "redis"):
            crashed = recorded_process(data_dir / server / f"{server}.pid")
            assert crashed is not None
            crashed.kill()
            up.wait_for_line(f"[up] {server} exited with code -9, restarting in 1 s", timeout=20)
            up.wait_for_line(f"[up] {server} is ready again", timeout=60)
            assert wait_until(lambda: all(readiness(port) == 200 for port in ops_ports.values()), timeout=60), {
                name: readiness(port) for name, port in ops_ports.items()}

        # Writes go through PostgreSQL, the outbox and NATS to the checker and back: the link becomes valid.
        added = requests.post(links_url, json={"url": f"{web_hosts['answering']}/fine", "title": "Fine"},
                              headers=headers, timeout=10)
        assert added.status_code == 201, added.text

        def status_of_fine() -> str | None:
            links = requests.get(links_url, headers=headers, timeout=10).json()["links"]
            return next((link["status"] for link in links if link["url"].endswith("/fine")), None)

        assert wait_until(lambda: status_of_fine() == "valid", timeout=30), status_of_fine()

        # The checker now waits on a host that never answers (for up to 30 s an attempt); `up` is stopped.
        added = requests.post(links_url, json={"url": f"{web_hosts['silent']}/slow", "title": "Slow"},
                              headers=headers, timeout=10)
        assert added.status_code == 201, added.text
        assert wait_until(lambda: web_hosts["silent_connections"], timeout=30)
    finally:
        started = time.monotonic()
        code, transcript = up.stop()
        took = time.monotonic() - started
    assert code == 0, transcript
    assert took < 30, transcript
    for noise in NOISE:
        assert noise not in transcript, transcript
    assert not any(recorded_process(data_dir / server / f"{server}.pid") for server in ("postgres", "nats", "redis"))
