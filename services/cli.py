"""`delinkcious` command line: run the whole system locally, serve one service, or probe its health."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .kit.serving.runtime import ServiceDefinition

# The container image sets SERVICE_NAME, so its entry point and health check need no argument.
SERVICE_NAME_VARIABLE = "SERVICE_NAME"
HEALTH_CHECKS = ("liveness", "readiness", "ping")
# A service that answers later than this counts as down; the image's HEALTHCHECK allows 5 s per probe.
PROBE_TIMEOUT_SECONDS = 2.0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="delinkcious", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run the whole system on this machine (no Docker needed)", add_help=False)
    serve = commands.add_parser("serve", help="run one service against configured servers")
    serve.add_argument("service", nargs="?", help=f"service name, e.g. link (default: ${SERVICE_NAME_VARIABLE})")
    probe = commands.add_parser(
        "probe", help="check a running service's health on this machine: exit 0 when healthy, 1 otherwise")
    probe.add_argument("service", nargs="?", help=f"service name, e.g. link (default: ${SERVICE_NAME_VARIABLE})")
    probe.add_argument("--check", choices=HEALTH_CHECKS, default="liveness",
                       help="which /healthz endpoint to ask (default: liveness)")
    news = commands.add_parser("news", help="operate the news service's store")
    news_commands = news.add_subparsers(dest="news_command", required=True)
    rebuild = news_commands.add_parser(
        "rebuild", help="rebuild the news store (follower projection and feeds) from social-graph and link now, "
                        "with the news service's settings (its environment); exit 0 when done")
    rebuild.add_argument("--lock-wait", type=float, default=300.0, metavar="SECONDS",
                         help="how long to wait for a rebuild already running elsewhere (default: 300)")
    commands.add_parser(
        "provision-databases",
        help="one-shot: give each service that owns a database its role and database on a shared server "
             "(POSTGRES_ADMIN_URL, POSTGRES_ADMIN_PASSWORD_FILE, DATABASE_PASSWORDS_DIR)")
    args, rest = parser.parse_known_args(argv)

    if args.command == "up":
        from .local.runtime import up

        return up(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "news":
        from .news.app import rebuild_command

        return rebuild_command(lock_wait_s=args.lock_wait)
    if args.command == "provision-databases":
        from .catalogue import SERVICES

        owners = [spec.name for spec in SERVICES if spec.uses_postgres]
        try:
            from .kit.serving.database_setup import run_database_setup
        except ModuleNotFoundError as missing:  # an image of a service without a database has no driver
            print(f"provision-databases: {missing.name} is not installed here: run it from the image of a service "
                  f"that owns a database ({', '.join(owners)})", file=sys.stderr, flush=True)
            return 2
        return run_database_setup(owners)
    from .catalogue import get_service

    name = args.service or os.environ.get(SERVICE_NAME_VARIABLE)
    if not name:
        parser.error(f"name the service, or set {SERVICE_NAME_VARIABLE}")
    try:
        spec = get_service(name)
    except KeyError as exc:
        parser.error(str(exc.args[0]))

    if args.command == "probe":
        # The probe serves no metrics: it must not write samples into the running service's directory.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return probe_health(spec.definition(), args.check)

    from .kit.observability.multiprocess import prepare_metrics_directory

    # Before anything imports prometheus_client: it reads PROMETHEUS_MULTIPROC_DIR on import.
    metrics_dir = prepare_metrics_directory(spec.name)
    from .kit.serving.gunicorn import serve as serve_service

    return serve_service(spec.definition(), metrics_dir=metrics_dir)


def probe_health(definition: ServiceDefinition, check: str) -> int:
    """Ask this machine's instance of the service for /healthz/<check>: 0 when it answers 200, else 1.

    The settings are read as `serve` reads them, so the probe finds the port the service listens on.
    """
    import http.client
    import urllib.error
    import urllib.request

    from .kit.serving.config import ConfigurationError, load_settings

    try:
        settings = load_settings(definition.settings_class, service_name=definition.name)
    except ConfigurationError as error:
        # 1, not serve's 2: Docker reserves a health check's exit status 2.
        print(f"{definition.name}: {error.message}", file=sys.stderr, flush=True)
        return 1
    ops_port = definition.ops_port(settings)
    url = f"http://{loopback_for(settings.host)}:{ops_port}/healthz/{check}"
    # No proxy: an HTTP(S)_PROXY of the container must not carry a request for this machine elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=PROBE_TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
        error.close()
    except (OSError, http.client.HTTPException) as error:  # refused, unreachable, timed out, or not HTTP
        reason = getattr(error, "reason", None) or error
        print(f"{definition.name}: {check} probe: {url} did not answer: {reason}", file=sys.stderr, flush=True)
        return 1
    if status == 200:
        return 0
    print(f"{definition.name}: {check} probe: {url} answered {status}", file=sys.stderr, flush=True)
    return 1


def loopback_for(host: str) -> str:
    """This machine's address, in the family of the address the service binds (HOST), as a URL host."""
    try:
        ipv6 = ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:  # a host name, such as localhost
        ipv6 = False
    return "[::1]" if ipv6 else "127.0.0.1"


if __name__ == "__main__":
    sys.exit(main())
