"""`delinkcious up` with the real services: it starts, reports ready, serves, stops cleanly, and a
second `up` on the same data directory finds everything as it was."""
from __future__ import annotations

import sys
from pathlib import Path

import requests
from delinkcious.contracts.events import LINK_ADDED, LINKS_STREAM
from delinkcious.local.servers import free_port

from tests.local.test_runtime import UpProcess, inherited_environment
from tests.support.jetstream import read_events


def start_up(data_dir: Path, ports: dict[str, int]) -> UpProcess:
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
                               "LINK__MAX_LINKS_PER_USER": "3"})


def test_up_serves_stops_and_restarts_on_the_same_data(tmp_path):
    data_dir = tmp_path / "data"
    ports = {name: free_port() for name in ("postgres", "nats", "redis", "oidc", "link", "user", "social-graph",
                                            "news", "news-grpc", "link-checker", "api-gateway", "api-gateway-admin")}
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
