#!/usr/bin/env python3
"""Proof that `delinkcious up --monitoring` monitors the whole local system with the real Prometheus.

Run from the repository, with Prometheus installed:

    .venv/bin/python k8s/monitoring/check-local.py

It starts `delinkcious up --monitoring` on free ports in a temporary data directory, then checks that Prometheus
scrapes every service of the catalogue (each target `health: up`, within 90 s), that it loaded the rule groups of
helm/delinkcious/files/monitoring/rules.yaml and evaluates them without errors, and that a PromQL query over
`delinkcious_http_requests_total` answers for every service; then it stops `up` and checks that Prometheus is gone.
Whatever happens, `up` and everything it started are stopped and the data directory removed.

Prometheus is the binary $PROMETHEUS names, else `prometheus` on PATH. Exit status: 0 every check passed, 1 a check
failed, 2 no Prometheus.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml
from delinkcious.catalogue import SERVICES
from delinkcious.local.monitoring import HOW_TO_GET_PROMETHEUS, RULES_FILE, PrometheusServer, find_prometheus
from delinkcious.local.processes import recorded_process
from delinkcious.local.servers import free_port
from delinkcious.local.servers.base import answers_ok
from delinkcious.local.wiring import SERVER_VARIABLES, override_prefix

TARGETS_TIMEOUT = 90.0
RULES_TIMEOUT = 30.0  # rules are evaluated every 5 s once loaded
STOP_TIMEOUT = 60.0
QUERY = "sum by (service) (delinkcious_http_requests_total)"


class Checks:
    """The checks' outcomes, printed as they are made and summed up at the end."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def record(self, name: str, passed: bool, detail: str) -> bool:
        print(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}", flush=True)
        if not passed:
            self.failed.append(name)
        return passed


def ports_environment() -> tuple[dict[str, int], dict[str, str]]:
    """Free ports for the servers, and `<SERVICE>__PORT` (and admin, gRPC) overrides for every catalogue service."""
    servers = {name: free_port() for name in ("postgres", "nats", "redis", "oidc", "prometheus")}
    overrides: dict[str, str] = {}
    for spec in SERVICES:
        prefix = override_prefix(spec.name)
        overrides[f"{prefix}PORT"] = str(free_port())
        if spec.admin_port is not None:
            overrides[f"{prefix}ADMIN_PORT"] = str(free_port())
        if spec.grpc_port is not None:
            overrides[f"{prefix}GRPC_PORT"] = str(free_port())
    return servers, overrides


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for(condition: Callable[[], bool], timeout: float, up: subprocess.Popen[bytes]) -> bool:
    """Poll `condition` every second until it holds, the time is over, or `up` has exited."""
    deadline = time.monotonic() + timeout
    while up.poll() is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if condition():
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return False


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def check_targets(checks: Checks, prometheus: str, up: subprocess.Popen[bytes]) -> None:
    expected = {spec.name for spec in SERVICES}
    latest: dict[str, dict[str, Any]] = {}

    def all_up() -> bool:
        targets = get_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
        latest.clear()
        latest.update({target["labels"].get("service", "?"): target for target in targets})
        return set(latest) == expected and all(target["health"] == "up" for target in latest.values())

    passed = wait_for(all_up, TARGETS_TIMEOUT, up)
    detail = ", ".join(f"{name} {target['health']} at {target['scrapeUrl']}" + (
        f" ({target['lastError']})" if target.get("lastError") else "") for name, target in sorted(latest.items()))
    missing = sorted(expected - set(latest))
    checks.record("every service is scraped and up", passed,
                  detail + (f"; no target for {', '.join(missing)}" if missing else ""))  # fmt: skip


def check_rules(checks: Checks, prometheus: str, up: subprocess.Popen[bytes]) -> None:
    if not RULES_FILE.is_file():
        checks.record("rule groups loaded", False, f"{RULES_FILE} is missing")
        return
    expected = [group["name"] for group in yaml.safe_load(RULES_FILE.read_text())["groups"]]
    loaded: list[dict[str, Any]] = []

    def all_evaluated() -> bool:
        loaded[:] = get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
        return all(rule["health"] != "unknown" for group in loaded for rule in group["rules"])

    evaluated = wait_for(all_evaluated, RULES_TIMEOUT, up)
    names = [group["name"] for group in loaded]
    checks.record("rule groups loaded", sorted(names) == sorted(expected),
                  f"{len(names)} loaded, {len(expected)} in {RULES_FILE.name}: {', '.join(names)}")  # fmt: skip
    broken = [f"{rule['name']}: {rule.get('lastError', '')}" for group in loaded for rule in group["rules"]
              if rule["health"] == "err"]  # fmt: skip
    if broken:
        detail = "; ".join(broken)
    elif evaluated:
        detail = f"{sum(len(group['rules']) for group in loaded)} rules evaluated"
    else:
        detail = f"not every rule evaluated within {RULES_TIMEOUT:.0f} s"
    checks.record("rules evaluate without errors", evaluated and not broken, detail)


def check_query(checks: Checks, prometheus: str) -> None:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': QUERY})}"
    result = get_json(url)["data"]["result"]
    counts = {series["metric"].get("service", "?"): series["value"][1] for series in result}
    missing = sorted({spec.name for spec in SERVICES} - set(counts))
    checks.record(f"PromQL {QUERY}", not missing,
                  ", ".join(f"{name}={count}" for name, count in sorted(counts.items()))
                  + (f"; no series for {', '.join(missing)}" if missing else ""))  # fmt: skip


def stop(up: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, and `up`'s exit code once it has stopped (None if it had to be killed)."""
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
    try:
        return up.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        up.kill()
        up.wait()
        return None


def tear_down(up: subprocess.Popen[bytes], data_dir: Path) -> None:
    """`up` stopped, and whatever it left running killed (each child is recorded in a pid file)."""
    stop(up)
    for pid_file in data_dir.rglob("*.pid"):
        if (process := recorded_process(pid_file)) is not None:
            with contextlib.suppress(psutil.Error):
                process.kill()


def log_tail(log_file: Path, lines: int = 30) -> str:
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])


def main() -> int:
    executable = find_prometheus(os.environ)
    if executable is None:
        print(f"check-local.py: no prometheus: {HOW_TO_GET_PROMETHEUS} (or name it in $PROMETHEUS)", file=sys.stderr)
        return 2
    checks = Checks()
    servers, overrides = ports_environment()
    prometheus = f"http://127.0.0.1:{servers['prometheus']}"
    with tempfile.TemporaryDirectory(prefix="delinkcious-monitoring-") as temporary:
        data_dir, log_file = Path(temporary) / "data", Path(temporary) / "up.log"
        command = [
            sys.executable, "-m", "delinkcious.cli", "up", "--monitoring", "--data-dir", str(data_dir),
            "--prometheus-port", str(servers["prometheus"]), "--postgres-port", str(servers["postgres"]),
            "--nats-port", str(servers["nats"]), "--redis-port", str(servers["redis"]),
            "--oidc-port", str(servers["oidc"]), "--log-format", "json",
        ]  # fmt: skip
        environment = {name: value for name, value in os.environ.items() if name not in SERVER_VARIABLES}
        print(f"prometheus: {executable}; delinkcious up --monitoring in {data_dir} (log: {log_file})", flush=True)
        with log_file.open("wb") as log:
            up = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  env={**environment, **overrides})  # fmt: skip
        try:
            ready = wait_for(lambda: answers_ok(f"{prometheus}/-/ready"), TARGETS_TIMEOUT, up)
            if not checks.record("prometheus ready", ready, f"{prometheus}/-/ready"):
                print(log_tail(log_file), file=sys.stderr)
                return 1
            check_targets(checks, prometheus, up)
            check_rules(checks, prometheus, up)
            check_query(checks, prometheus)
            process = recorded_process(data_dir / PrometheusServer.name / f"{PrometheusServer.name}.pid")
            code = stop(up)
            checks.record("up stops cleanly", code == 0, f"exit code {code}")
            stopped = process is not None and gone(process) and not listening(servers["prometheus"])
            checks.record("prometheus stops with up", stopped,
                          f"pid {process.pid if process else '?'} gone, port {servers['prometheus']} closed"
                          if stopped else "still running")  # fmt: skip
        except (OSError, ValueError, KeyError) as error:
            checks.record("checks ran", False, repr(error))
        finally:
            tear_down(up, data_dir)
            if checks.failed:
                print(f"--- last lines of {log_file.name}:\n{log_tail(log_file)}", file=sys.stderr)
    total = "all checks passed" if not checks.failed else f"failed: {', '.join(checks.failed)}"
    print(f"check-local.py: {total}", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
