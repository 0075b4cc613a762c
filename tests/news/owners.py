"""The services news projects from (link and social-graph), wired as in production (real PostgreSQL, NATS
JetStream, outbox relay, consumers) and served over real HTTP, so that a news process can read them when it
rebuilds its store while the tests drive them through Flask's test clients; and the environment a news process
is given."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from delinkcious.link.app import DEFINITION as LINK
from delinkcious.social_graph.app import DEFINITION as SOCIAL_GRAPH
from werkzeug.serving import make_server

from tests.support.process import page_token_secret
from tests.support.user_service import StandInUserService


@dataclass
class Owners:
    link: Any  # Flask test clients
    graph: Any
    link_url: str
    graph_url: str
    users: StandInUserService  # the user service social-graph asks whether a followed user exists


@contextmanager
def served_over_http(app: Any) -> Iterator[str]:
    """`app` on a free local port, in a thread; its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=f"http-{app.name}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def running_owners(service_environment: Any) -> Iterator[Owners]:
    stand_in = StandInUserService().start()
    try:
        with service_environment.running(LINK, allowed_callers="api-gateway,news") as (_, link_app), \
                service_environment.running(SOCIAL_GRAPH, user_service_url=stand_in.url,
                                            caller_token="social-graph-token", allowed_callers="api-gateway,news") \
                as (_, graph_app), \
                served_over_http(link_app) as link_url, served_over_http(graph_app) as graph_url:
            yield Owners(link_app.test_client(), graph_app.test_client(), link_url, graph_url, stand_in)
    finally:
        stand_in.stop()


def news_environment(service_environment: Any, owners: Owners, redis_url: str, grpc_port: int) -> dict[str, str]:
    """What `delinkcious serve news` (or `delinkcious news rebuild`) is given, as a deployment gives it."""
    return {
        "NATS_URL": service_environment.nats_url,
        "REDIS_URL": redis_url,
        "GRPC_PORT": str(grpc_port),
        "TRUSTED_CALLERS_DIR": str(service_environment.callers_dir),
        "ALLOWED_CALLERS": "api-gateway",
        "SOCIAL_GRAPH_SERVICE_URL": owners.graph_url,
        "LINK_SERVICE_URL": owners.link_url,
        "CALLER_TOKEN_FILE": str(service_environment.callers_dir / "news"),
        "PAGE_TOKEN_SECRET": page_token_secret("news"),
        "LOG_FORMAT": "json",
    }
