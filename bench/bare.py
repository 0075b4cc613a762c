"""The bare servers the floors are measured on, each run as its own process:

    python -m bench.bare hello --port P                 Flask answering {"hello": "world"} under gunicorn
    python -m bench.bare front --port P --next URL      Flask answering what GET URL answered (requests)
    python -m bench.bare grpc-echo --port P             a unary gRPC method answering its request's bytes

The Flask apps run under the kit's own gunicorn application class (`ServiceApplication`) with the kit's
settings read from the environment as the services read theirs, so gthread, workers, threads, keep-alive and
timeouts are the services' (WEB_WORKERS=1 for the run gives both one worker) and follow them when they change. The gRPC server has the thread pool and concurrency bound of the kit's GrpcServer at the
GrpcSettings defaults, without its interceptors, health and reflection.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

HOST = "127.0.0.1"


def _kit_settings(port: int) -> Any:
    """The services' own gunicorn settings (BaseServiceSettings, from this environment like theirs: a run with
    WEB_WORKERS=1 gives the floors one worker too), on our own port and without an admin port."""
    from delinkcious.kit.serving.config import BaseServiceSettings

    return BaseServiceSettings(service_name="bench", host=HOST, port=port, admin_port=None)


def hello_app() -> Any:
    from flask import Flask, jsonify

    app = Flask("bench-hello")

    @app.get("/")
    def hello() -> Any:
        return jsonify(hello="world")

    return app


def front_app(next_url: str) -> Any:
    import requests
    from flask import Flask, Response
    from requests.adapters import HTTPAdapter

    app = Flask("bench-front")
    # One pooled session per process, as the kit's ServiceClient keeps one per dependency.
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=32))

    @app.get("/")
    def hop() -> Any:
        answer = session.get(next_url, timeout=(2.0, 5.0))
        return Response(answer.content, status=answer.status_code, content_type=answer.headers.get("Content-Type"))

    return app


def serve_under_kit_gunicorn(app: Any, name: str, port: int) -> None:
    from delinkcious.kit.serving.gunicorn import ServiceApplication

    class BareApplication(ServiceApplication):
        def load(self) -> Any:
            return app

    BareApplication(SimpleNamespace(name=f"bench-{name}"), _kit_settings(port)).run()


def serve_grpc_echo(port: int) -> None:
    import grpc
    from delinkcious.kit.serving.config import GrpcSettings

    workers = GrpcSettings.model_fields["grpc_workers"].default
    server = grpc.server(ThreadPoolExecutor(max_workers=workers), maximum_concurrent_rpcs=workers * 4)
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)  # bytes in, bytes out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Echo": echo}),))
    server.add_insecure_port(f"{HOST}:{port}")
    server.start()
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    server.stop(grace=1).wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("hello", "front", "grpc-echo"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--next", help="the URL `front` calls")
    args = parser.parse_args(argv)
    if args.kind == "grpc-echo":
        serve_grpc_echo(args.port)
    elif args.kind == "front":
        serve_under_kit_gunicorn(front_app(args.next), "front", args.port)
    else:
        serve_under_kit_gunicorn(hello_app(), "hello", args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
