"""`delinkcious` command line: run the whole system locally, or serve one service."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="delinkcious", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run the whole system on this machine (no Docker needed)", add_help=False)
    serve = commands.add_parser("serve", help="run one service against configured servers")
    serve.add_argument("service", help="service name, e.g. link")
    args, rest = parser.parse_known_args(argv)

    if args.command == "up":
        from .local.runtime import up

        return up(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from .catalogue import get_service

    try:
        spec = get_service(args.service)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    from .kit.observability.multiprocess import prepare_metrics_directory

    # Before anything imports prometheus_client: it reads PROMETHEUS_MULTIPROC_DIR on import.
    metrics_dir = prepare_metrics_directory(spec.name)
    from .kit.serving.gunicorn import serve as serve_service

    return serve_service(spec.definition(), metrics_dir=metrics_dir)


if __name__ == "__main__":
    sys.exit(main())
