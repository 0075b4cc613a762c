"""`up` itself: killed hard it takes every server and service with it (no orphan holds a port), the next `up` on the
same data directory starts cleanly and finds everything as it was, and a SIGTERM with a link check waiting on a
silent host stops the whole system within 30 s, with no traceback. Last, nothing either run logged contains a
secret: no access token, caller token, session or client secret, page-token or database password."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from delinkcious.local.processes import recorded_process

from tests.faults.conftest import SYSTEM_ENVIRONMENT, Figures, System
from tests.support.jetstream import wait_until
from tests.support.up import NOISE, is_alive, listening, start_up
from tests.support.web import web_hosts


def recorded_children(data_dir: Path) -> dict[str, psutil.Process]:
    """Every process `up` recorded in the data directory (servers, identity provider, services)."""
    found = {path.stem: recorded_process(path) for path in data_dir.rglob("*.pid")}
    return {name: process for name, process in found.items() if process is not None}


@pytest.fixture
def silent_host() -> Iterator[tuple[str, list[socket.socket]]]:
    """A host that accepts connections and never answers; the connections it took."""
    with web_hosts() as hosts:
        yield hosts["silent"], hosts["silent_connections"]


def secrets_of(data_dir: Path) -> set[str]:
    return {path.read_text().strip() for path in (data_dir / "secrets").rglob("*") if path.is_file()} - {""}


@pytest.mark.ends_the_system
def test_up_killed_hard_restarted_and_stopped_with_a_check_in_flight(system: System, figures: Figures, silent_host):
    survivor = system.new_user("lifecycle")
    kept = survivor.call("POST", "/v1/links", json={"url": f"{system.web}/kept", "title": "kept"})
    assert kept.status_code == 201, kept.text
    tokens = {survivor.token}

    children = recorded_children(system.data_dir)
    assert {"postgres", "nats", "redis", "api-gateway", "link"} <= set(children), sorted(children)
    system.up.process.kill()
    killed_at = time.monotonic()
    system.up.process.wait(10)
    gone_at: dict[str, float] = {}

    def all_gone() -> bool:
        for name, process in children.items():
            if name not in gone_at and not is_alive(process):
                gone_at[name] = time.monotonic() - killed_at
        return len(gone_at) == len(children)

    assert wait_until(all_gone, timeout=15), {name: process.pid for name, process in children.items() if is_alive(process)}
    gone_after = max(gone_at.values())
    servers_gone_after = max(gone_at[name] for name in ("postgres", "nats", "redis"))
    assert not [port for port in system.ports.values() if listening(port)]
    first_transcript = system.transcript(lines=10**9)

    started_at = time.monotonic()
    second = start_up(system.data_dir, system.ports, **{**SYSTEM_ENVIRONMENT, "LINK_CHECKER__LINK_CHECKER_TIMEOUT": "30"})
    stop_took = None
    try:
        second.wait_for_line("delinkcious is up", timeout=180)
        second_ready_after = time.monotonic() - started_at
        assert [link["url"] for link in survivor.links()] == [f"{system.web}/kept"]

        silent_url, held = silent_host
        waiting = survivor.call("POST", "/v1/links", json={"url": f"{silent_url}/slow", "title": "slow"})
        assert waiting.status_code == 201, waiting.text
        assert wait_until(lambda: held, timeout=30)
    finally:
        stopping_at = time.monotonic()
        code, second_transcript = second.stop()
        stop_took = time.monotonic() - stopping_at
    assert code == 0, second_transcript[-5000:]
    assert stop_took < 30, second_transcript[-5000:]
    noise = [line for line in second_transcript.splitlines() if any(word in line for word in NOISE)]
    assert not noise, noise[:5]
    assert not recorded_children(system.data_dir)

    # No secret in any line either run printed (every service's log goes through `up`).
    lines = (first_transcript + "\n" + second_transcript).splitlines()
    secrets = secrets_of(system.data_dir) | tokens | system.minted_tokens
    leaks = [line[:200] for line in lines if any(secret in line for secret in secrets)]
    assert not leaks, leaks[:5]
    # The servers get SIGKILL from the kernel; the services their stop signal (a graceful stop, bounded).
    figures.record("up_killed_hard", children=len(children), servers_gone_after_s=round(servers_gone_after, 1),
                   all_gone_after_s=round(gone_after, 1),
                   ports_left_listening=0, next_up_ready_after_s=round(second_ready_after, 1),
                   data_kept=True)
    figures.record("up_stopped_with_a_check_in_flight", stop_s=round(stop_took, 1), exit_code=code,
                   tracebacks=len(noise))
    figures.record("secrets_in_logs", log_lines=len(lines), secrets_looked_for=len(secrets), found=len(leaks))
