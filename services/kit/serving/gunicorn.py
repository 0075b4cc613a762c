"""Running a service for real: settings, logging, migrations, then gunicorn.

gunicorn (gthread workers, bounded thread pool) serves the Flask app. A service with a database or a
broker builds its own runtime (pool, NATS connection, relay, consumers) in each worker, after forking. A
service with neither (the API gateway) is built once in the master, before it forks: the workers share the
built app's memory instead of each building (and so writing to) a copy of it. Such a service's `build` must
open nothing (no connection, no thread); the kit's clients open theirs on first use, in the worker. Either
way each worker starts its runtime after the fork. On SIGTERM gunicorn stops accepting and each worker's
consumers stop fetching (work that can be redone gives way); in-flight requests finish within GRACEFUL_TIMEOUT,
and each worker then lets its consumers finish, drains the outbox and closes its pools; the master exits 0.
"""
from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import shutil
import signal
import socket
import ssl
import sys
import threading
import time
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker

from ..core.errors import Unavailable
from ..observability.logs import configure_logging, get_logger
from ..observability.tracing import configure_tracing
from .config import ConfigurationError, NatsSettings, PostgresSettings, load_settings
from .runtime import ServiceDefinition, ServiceRuntime

log = get_logger(__name__)

# The runtime a worker serves: built in the worker, or built in the master and inherited (builds_before_fork).
_worker_runtime: ServiceRuntime | None = None


class _StructlogGunicornLogger(GunicornLogger):
    """gunicorn's own messages go through our JSON logging; its access log is replaced by ours."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)  # also notes once that there is no access log, which gunicorn asks on every request
        for logger in (self.error_log, self.access_log):
            logger.handlers = []
            logger.propagate = True
        self.error_log.setLevel(cfg.loglevel.upper())
        self.access_log.disabled = True


# --- gunicorn's own refusals in the JSON error shape --------------------------------------------
def _refusal(exc: BaseException, cfg: Any) -> tuple[int, str, str, str] | None:
    """(status, reason, code, message) of a request gunicorn refuses before the app sees it; None for a failure
    that is not the client's (gunicorn's own 500)."""
    if isinstance(exc, (http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName,
                        http_errors.ConfigurationProblem)):
        return None  # the app's or the deployment's fault, not the client's
    if isinstance(exc, http_errors.LimitRequestLine):
        return 414, "URI Too Long", "uri_too_long", f"request line longer than {cfg.limit_request_line} bytes"
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return (431, "Request Header Fields Too Large", "header_fields_too_large",
                f"request headers: more than {cfg.limit_request_fields} fields or a field longer than "
                f"{cfg.limit_request_field_size} bytes")
    if isinstance(exc, http_errors.UnsupportedTransferCoding):
        return 501, "Not Implemented", "not_implemented", f"request: {exc}"
    if isinstance(exc, http_errors.ExpectationFailed):
        return 417, "Expectation Failed", "expectation_failed", f"request: {exc}"
    if isinstance(exc, (http_errors.ForbiddenProxyRequest, ssl.SSLError)):
        return 403, "Forbidden", "forbidden", "request forbidden"
    if isinstance(exc, http_errors.ParseException):
        # A malformed request line, method, version, header, chunk or proxy line. Its text is cut short: it
        # quotes what the client sent.
        return 400, "Bad Request", "invalid_input", f"request: malformed ({str(exc)[:200]})"
    return None


def _write_json_error(sock: Any, status: int, reason: str, body: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode("latin-1")
    gunicorn_util.write_nonblock(sock, head + payload)


# --- a stop that loses no accepted connection ----------------------------------------------------
# How long a stopping worker still takes connections from the listener's queue: the ones that were queued when
# the stop began and the handshakes that were under way (new ones are no longer let in, _refuse_new_connections).
STOP_ACCEPT_SETTLE_S = 0.3
_SO_ATTACH_FILTER = 26  # Linux, <asm-generic/socket.h>


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


# A classic BPF socket filter, run by the kernel on the listening socket's packets (the TCP header first): a
# segment with SYN and without ACK (a new connection's first packet) is dropped, anything else passes.
_DROP_NEW_CONNECTIONS = (
    _SockFilter(0x30, 0, 0, 13),          # ldb [13]: the TCP flags
    _SockFilter(0x54, 0, 0, 0x12),        # and #(SYN|ACK)
    _SockFilter(0x15, 0, 1, 0x02),        # jeq #SYN: drop, else accept
    _SockFilter(0x06, 0, 0, 0),           # ret #0: drop
    _SockFilter(0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: accept whole
)


def _refuse_new_connections(listener: Any) -> bool:
    """Let no new connection into `listener`'s queue, while the connections already in it (and handshakes under
    way) stay and can still be accepted. Closing a listener resets every connection still queued in it, although
    the client has sent its request on it; with new connections kept out, the stopping workers empty the queue
    first (ThreadWorker below). A client's SYN that was dropped is retried by its kernel and refused (ECONNREFUSED)
    once the listener is closed: nothing was sent, the client may go elsewhere. Linux only; elsewhere (or if the
    kernel refuses the filter) a stop is as gunicorn's, False."""
    if not hasattr(socket, "AF_INET") or getattr(listener, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return False
    program = (_SockFilter * len(_DROP_NEW_CONNECTIONS))(*_DROP_NEW_CONNECTIONS)
    try:
        listener.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER,
                            bytes(_SockFprog(len(_DROP_NEW_CONNECTIONS), program)))
    except OSError:
        return False
    return True


class _StoppingArbiter(Arbiter):
    def stop(self, graceful: bool = True) -> None:
        # As gunicorn decides whether the listeners are ours alone (no re-exec'd master nor systemd sharing them).
        if graceful and self.reexec_pid == self.master_pid == 0 and not self.systemd and not self.cfg.reuse_port:
            for listener in self.LISTENERS:
                _refuse_new_connections(listener)
        super().stop(graceful)


class ServiceWorker(ThreadWorker):
    """gunicorn's gthread worker, with its own refusals (request line or headers too long, a malformed request) in
    the JSON error shape `{"message", "code"}` instead of an HTML page, and a stop that takes every connection
    still queued in the listener before it closes it."""

    _settled = False

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi

        def closing_after_an_unread_body(environ: Any, start_response: Any) -> Any:
            """A 413 leaves the request's body unread, and gunicorn drains at most 64 KiB of it before it drops the
            connection: the answer says `Connection: close`, so the client does not send its next request on it."""

            def start(status: str, headers: Any, exc_info: Any = None) -> Any:
                if status.startswith("413") and hasattr(getattr(start_response, "__self__", None), "force_close"):
                    start_response.__self__.force_close()
                return start_response(status, headers, exc_info)

            return app(environ, start)

        self.wsgi = closing_after_an_unread_body

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        refusal = _refusal(exc, self.cfg)
        if refusal is None:
            self.log.exception("Error handling request")
            status, reason, code, message = 500, "Internal Server Error", "internal", "internal error"
        else:
            status, reason, code, message = refusal
            self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], str(exc)[:200])
        try:
            _write_json_error(client, status, reason, {"message": message, "code": code})
        except Exception:
            self.log.debug("Failed to send error message.")

    def set_accept_enabled(self, enabled: bool) -> None:
        if not enabled and not self.alive and self._accepting and not self._settled:
            # Stopping: the listener keeps being polled (its accept callback takes each queued connection, which
            # is served with `Connection: close`) until the queue has settled, then this worker closes its copy.
            self._settled = True
            deadline = time.monotonic() + STOP_ACCEPT_SETTLE_S
            while (remaining := deadline - time.monotonic()) > 0 and self.nr_conns < self.worker_connections:
                self.wait_for_and_dispatch_events(timeout=remaining)
            super().set_accept_enabled(False)
            for listener in self.sockets:
                listener.close()  # the kernel refuses new connections once every process has closed its copy
            return
        super().set_accept_enabled(enabled)


class ServiceApplication(BaseApplication):
    def __init__(self, definition: ServiceDefinition, settings: Any) -> None:
        self.definition = definition
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options = {
            "bind": [f"{s.host}:{s.port}", *([f"{s.host}:{s.admin_port}"] if s.admin_port else [])],
            "workers": s.web_workers,
            "worker_class": ServiceWorker,  # gthread, with JSON refusals and a stop that loses no connection
            "threads": s.web_threads,
            # The master kills workers this long after SIGTERM: room for the HTTP drain, then the
            # consumers/outbox drain, then closing the broker connection.
            "graceful_timeout": math.ceil(s.graceful_timeout + s.shutdown_drain_timeout + 5),
            "timeout": 30,
            "keepalive": 5,
            "max_requests": 0,
            # The runtime control socket is an extra way into the process; we manage by signals.
            "control_socket_disable": True,
            "logger_class": _StructlogGunicornLogger,
            "loglevel": s.log_level,
            "proc_name": f"delinkcious-{self.definition.name}",
            "preload_app": builds_before_fork(type(s)),
            "pre_fork": _pre_fork,
            "post_worker_init": _post_worker_init,
            "worker_exit": _worker_exit,
            "child_exit": _child_exit,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def run(self) -> None:
        """BaseApplication.run, with an arbiter whose graceful stop keeps new connections out first."""
        try:
            _StoppingArbiter(self).run()
        except RuntimeError as error:
            print(f"\nError: {error}\n", file=sys.stderr, flush=True)
            sys.exit(1)

    def load(self) -> Any:
        global _worker_runtime
        from .web import create_wsgi

        configure_logging(self.definition.name, self.settings.log_format, self.settings.log_level)
        runtime = ServiceRuntime(self.definition, self.settings)
        parts = self.definition.build(runtime)
        runtime.add_subscriptions(parts.subscriptions)
        _worker_runtime = runtime
        return create_wsgi(runtime, parts.blueprints, parts.app_setup)


def builds_before_fork(settings_class: type) -> bool:
    """Whether a service with these settings is built in the master. Not with a NATS connection: it makes its
    asyncio loop (an epoll descriptor) when it is made, and forked workers would share that loop. Not with a
    database pool either, so that every connection to PostgreSQL stays a worker's own."""
    return not issubclass(settings_class, (NatsSettings, PostgresSettings))


def _pre_fork(server: Any, worker: Any) -> None:
    # What the master holds now (imports, and a service built before the fork) is moved out of the collector's
    # reach, so a worker's collections never write to (and so copy) the memory it shares with the master.
    gc.freeze()


def _post_worker_init(worker: Any) -> None:
    if _worker_runtime is not None:
        _worker_runtime.start()
        if _worker_runtime.consumers is not None:
            _consumers_stop_fetching_on_sigterm(worker, _worker_runtime)


def _consumers_stop_fetching_on_sigterm(worker: Any, runtime: ServiceRuntime) -> None:
    """gunicorn's SIGTERM handler stops the worker accepting connections; the consumers stop fetching at the same
    moment (and work that can be redone gives way), not only once the HTTP drain is over."""
    gunicorn_handler = worker.handle_exit

    def on_sigterm(signum: int, frame: Any) -> None:
        gunicorn_handler(signum, frame)
        # The stop request takes locks, which the interrupted thread may hold: it runs in a thread of its own.
        threading.Thread(target=runtime.request_stop, name="stop-request", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn has it: in-flight system calls are not disturbed


def _worker_exit(server: Any, worker: Any) -> None:
    if _worker_runtime is not None:
        _worker_runtime.stop(timeout=_worker_runtime.settings.shutdown_drain_timeout)


def _child_exit(server: Any, worker: Any) -> None:
    from ..observability.metrics import mark_worker_dead

    mark_worker_dead(worker.pid)


def serve(definition: ServiceDefinition, metrics_dir: str | None = None) -> int:
    """The process entry point for one service (`delinkcious serve NAME`, container CMD).

    `metrics_dir` is the multi-process metrics directory this process created (and removes at exit).
    """
    owner = os.getpid()
    try:
        try:
            settings = load_settings(definition.settings_class, service_name=definition.name)
        except ConfigurationError as error:
            print(f"{definition.name}: {error.message}", file=sys.stderr, flush=True)
            return 2
        configure_logging(definition.name, settings.log_format, settings.log_level)
        # Before any app, server or channel exists: the instrumentations patch the libraries that make them.
        configure_tracing(definition.name)
        if settings.caller_auth == "disabled":
            log.warning("caller_auth_disabled", reason="CALLER_AUTH=disabled: internal endpoints accept any caller")
        if isinstance(settings, PostgresSettings):
            password = settings.database_password.get_secret_value() if settings.database_password else None
            from ..postgres.db import apply_migrations, build_dsn  # only services with a database

            try:
                apply_migrations(
                    build_dsn(settings.database_url), definition.migration_dirs(),
                    password=password, timeout=settings.startup_timeout,
                )
            except Unavailable as error:
                log.error("startup_failed", error=error.message, startup_timeout_s=settings.startup_timeout)
                return 1
        if definition.mode == "worker":
            from .worker import run_worker

            return run_worker(definition, settings)
        log.info("service_starting", address=f"{settings.host}:{settings.port}",
                 workers=settings.web_workers, threads=settings.web_threads)
        ServiceApplication(definition, settings).run()
        return 0
    finally:
        # gunicorn's forked workers unwind through here too when they exit: only the process that
        # made the directory (the master) may remove it, or the surviving workers lose their metrics.
        if metrics_dir and os.getpid() == owner:
            shutil.rmtree(metrics_dir, ignore_errors=True)
