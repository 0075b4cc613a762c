"""The command line of `delinkcious up`: its options with their defaults (the data directory follows
$DELINKCIOUS_DATA_DIR, then $XDG_DATA_HOME; the log format follows whether stdout is a terminal; Prometheus
runs only with --monitoring), and the services that `--only` selects from the catalogue."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from delinkcious.catalogue import ServiceFacts


@dataclass(frozen=True)
class Options:
    data_dir: Path
    host: str
    postgres_port: int
    nats_port: int
    redis_port: int
    oidc_port: int
    only: tuple[str, ...]
    log_format: str
    monitoring: bool
    prometheus_port: int


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """$DELINKCIOUS_DATA_DIR, else $XDG_DATA_HOME/delinkcious, else ~/.local/share/delinkcious."""
    if environ.get("DELINKCIOUS_DATA_DIR"):
        return Path(environ["DELINKCIOUS_DATA_DIR"]).expanduser()
    if environ.get("XDG_DATA_HOME"):
        return Path(environ["XDG_DATA_HOME"]).expanduser() / "delinkcious"
    return Path.home() / ".local" / "share" / "delinkcious"


def parse_options(argv: Sequence[str], environ: Mapping[str, str], stdout_is_tty: bool) -> Options:
    parser = argparse.ArgumentParser(
        prog="delinkcious up",
        description="Run the whole Delinkcious system locally (embedded PostgreSQL, NATS and Redis).",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(environ))
    parser.add_argument("--host", default="127.0.0.1", help="address every server and service listens on")
    parser.add_argument("--postgres-port", type=int, default=15432)
    parser.add_argument("--nats-port", type=int, default=14222)
    parser.add_argument("--redis-port", type=int, default=16379)
    parser.add_argument(
        "--oidc-port", type=int, default=9400, help="port of the local identity provider started for the API gateway"
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="SERVICE", help="start only this service (repeatable)"
    )
    parser.add_argument("--log-format", choices=("json", "console"), default="console" if stdout_is_tty else "json")
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="also run Prometheus (if installed) scraping every service, with the alerting rules",
    )
    parser.add_argument("--prometheus-port", type=int, default=9090, help="port of Prometheus with --monitoring")
    arguments = parser.parse_args(list(argv))
    return Options(
        data_dir=arguments.data_dir.expanduser().absolute(),
        host=arguments.host,
        postgres_port=arguments.postgres_port,
        nats_port=arguments.nats_port,
        redis_port=arguments.redis_port,
        oidc_port=arguments.oidc_port,
        only=tuple(dict.fromkeys(arguments.only)),
        log_format=arguments.log_format,
        monitoring=arguments.monitoring,
        prometheus_port=arguments.prometheus_port,
    )


def select_services(services: Sequence[ServiceFacts], only: Sequence[str]) -> list[ServiceFacts]:
    """The services named by --only (all of them if none is named), in catalogue order."""
    known = {spec.name for spec in services}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [spec for spec in services if not only or spec.name in only]
