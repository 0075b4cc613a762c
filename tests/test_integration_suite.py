"""The black-box suite in integration-test/ against the whole system run by `delinkcious up`: the
local identity provider, the gateway and every service, on free ports in a fresh data directory. Once it
passed, the running services export every metric the Grafana dashboard queries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests
from delinkcious.local.servers import free_port

from tests.support.metrics import dashboard_metrics, exported_metrics
from tests.support.up import UpProcess, inherited_environment

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("link", "user", "social-graph", "news", "link-checker", "api-gateway")


def test_the_integration_suite_passes_against_delinkcious_up(tmp_path: Path) -> None:
    servers = {name: free_port() for name in ("postgres", "nats", "redis", "oidc")}
    ports = {name: free_port() for name in SERVICES}
    admin_port = free_port()  # the gateway's /healthz/* and /metrics
    environment = {
        **inherited_environment(),
        **{f"{name.upper().replace('-', '_')}__PORT": str(port) for name, port in ports.items()},
        "NEWS__GRPC_PORT": str(free_port()),
        "API_GATEWAY__ADMIN_PORT": str(admin_port),
        # The suite's link-status test points links at a server on 127.0.0.1.
        "LINK_CHECKER__LINK_CHECKER_ALLOW_PRIVATE_ADDRESSES": "true",
        # Everything comes from one address here; the limits themselves are tested in tests/api_gateway.
        "API_GATEWAY__RATE_LIMIT_PER_ADDRESS": "100000/minute",
        "API_GATEWAY__RATE_LIMIT_PER_USER": "100000/minute",
    }
    command = [
        sys.executable, "-m", "delinkcious.cli", "up", "--data-dir", str(tmp_path / "data"), "--log-format", "json",
        "--postgres-port", str(servers["postgres"]), "--nats-port", str(servers["nats"]),
        "--redis-port", str(servers["redis"]), "--oidc-port", str(servers["oidc"]),
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{ports['api-gateway']}"
    up = UpProcess(command, environment)
    try:
        assert up.wait_for_line("delinkcious is up", timeout=180) == "delinkcious is up", up.output
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", "integration-test", f"--base-url={base_url}", "-q", "-p",
             "no:cacheprovider"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={name: value for name, value in inherited_environment().items() if name != "DELINKCIOUS_BASE_URL"},
        )  # fmt: skip
        metrics_ports = {**ports, "api-gateway": admin_port}
        exported = {name: exported_metrics(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
                    for name, port in metrics_ports.items()} if suite.returncode == 0 else {}
    finally:
        code, transcript = up.stop()
    assert suite.returncode == 0, (
        suite.stdout[-20000:] + suite.stderr[-5000:] + "\n--- the end of up's transcript ---\n" + transcript[-5000:]
    )
    assert code == 0, transcript[-20000:]
    assert f"log in at: {base_url}/login" in up.output
    # Under gunicorn a metric is exported once one of its series exists: the dashboard's must, after the suite.
    missing = dashboard_metrics() - set().union(*exported.values())
    assert not missing, f"the dashboard queries metrics no service exports: {sorted(missing)}"
