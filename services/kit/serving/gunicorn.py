"""Running a service for real: settings, logging, migrations, then gunicorn.

gunicorn (gthread workers, bounded thread pool) serves the Flask app. A service with a database or a
broker builds its own runtime (pool, NATS connection, relay, consumers) in each worker, after forking. A
service with neither (the API gateway) is built once in the master, before it forks: the workers share the
built app's memory instead of each building (and so writing to) a copy of it. Such a service's `build` must
open nothing (no connection, no thread); the kit's clients open theirs on first use, in the worker. Either
way each worker starts its runtime after the fork. On SIGTERM gunicorn stops accepting, finishes in-flight
requests within GRACEFUL_TIMEOUT, and each worker then stops its consumers, drains the outbox and closes its
pools; the master exits 0.
"""
from __future__ import annotations

import gc
import math
import os
import shutil
import sys
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from ..core.errors import Unavailable
from ..observability.logs import configure_logging, get_logger
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
            "worker_class": "gthread",
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
