"""Health endpoints' semantics, shared by every service.

- ping: the process answers HTTP at all. Always 200.
- liveness: the process can still serve: its background workers (outbox relay, consumers) are
  alive. 503 tells the orchestrator to restart it.
- readiness: start-up has finished and the service's own dependencies answer. 503 takes the
  instance out of load balancing without restarting it.
Each body lists every check performed with its result and latency.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

CheckFunction = Callable[[], dict[str, Any] | None]


@dataclass(frozen=True)
class Check:
    name: str
    run: CheckFunction  # raises when unhealthy; may return details to show
    critical: bool = True  # a failing non-critical check is reported, but the instance stays ready


class Health:
    def __init__(self, service: str, check_timeout: float = 2.0) -> None:
        self.service = service
        self._check_timeout = check_timeout
        self._readiness: list[Check] = []
        self._liveness: list[Check] = []
        self._started = threading.Event()
        self._stopping = threading.Event()
        # Readiness probes arrive every few seconds from several sources; a small pool keeps one
        # slow dependency from stalling the probe beyond its timeout.
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")

    def add_readiness_check(self, check: Check) -> None:
        self._readiness.append(check)

    def add_liveness_check(self, check: Check) -> None:
        self._liveness.append(check)

    def mark_started(self) -> None:
        self._started.set()

    def mark_stopping(self) -> None:
        self._stopping.set()

    def liveness(self) -> tuple[int, dict[str, Any]]:
        results = [self._run(check) for check in self._liveness]
        alive = all(result["ok"] for result in results)
        return (200 if alive else 503), {
            "status": "alive" if alive else "dead",
            "service": self.service,
            "checks": results,
        }

    def readiness(self) -> tuple[int, dict[str, Any]]:
        results = [self._run(check) for check in self._readiness]
        startup = {"name": "startup", "ok": self._started.is_set(), "critical": True, "latency_ms": 0.0}
        shutdown = {"name": "not_stopping", "ok": not self._stopping.is_set(), "critical": True, "latency_ms": 0.0}
        checks = [startup, shutdown, *results]
        ready = all(check["ok"] for check in checks if check["critical"])
        degraded = ready and not all(check["ok"] for check in checks)
        status = "degraded" if degraded else ("ready" if ready else "not_ready")
        return (200 if ready else 503), {"status": status, "service": self.service, "checks": checks}

    def _run(self, check: Check) -> dict[str, Any]:
        started = time.perf_counter()
        result: dict[str, Any] = {"name": check.name, "critical": check.critical}
        future = self._executor.submit(check.run)
        try:
            detail = future.result(timeout=self._check_timeout)
            result["ok"] = True
            if detail:
                result["detail"] = detail
        except TimeoutError:
            result["ok"] = False
            result["error"] = f"timed out after {self._check_timeout:.1f}s"
        except Exception as exc:  # a failing check is a result, not an error of the probe
            result["ok"] = False
            result["error"] = f"{type(exc).__name__}: {exc}".strip()[:300]
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
