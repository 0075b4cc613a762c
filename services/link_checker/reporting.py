"""What the link checker tells operators: a log line and metrics for every check made (conclusive, inconclusive,
given up), the state of its own network (a gauge, log lines, a readiness detail), and the retry queue's size.
Names follow docs/metrics.md and docs/logging.md."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..kit.core.clock import format_timestamp
from ..kit.observability import metrics
from ..kit.observability.logs import get_logger
from ..kit.observability.metrics import (
    LINK_CHECK_RETRIES_PENDING,
    LINK_CHECKER_OUTAGE,
    LINK_CHECKS_GIVEN_UP,
    LINK_CHECKS_INCONCLUSIVE,
)
from .domain import CheckRequest
from .service import CheckResult, Deferred, GivenUp, NetworkStatus, NetworkWatch, PendingCheck, Published

log = get_logger(__name__)

# How each change of the checker's network state is logged.
_WATCH_LEVELS = {
    "checker_outage_suspected": "warning",
    "checker_outage_disproved": "info",
    "checker_outage_unconfirmed": "info",
    "checker_outage_began": "error",
    "checker_outage_probed": "info",
    "checker_outage_trial": "warning",
    "checker_outage_trial_failed": "warning",
    "checker_outage_ended": "warning",
}


class OwnNetworkOutage(RuntimeError):
    """The readiness detail of an outage: reported (the instance stays ready), never raised to anyone else."""


class Reporter:
    def __init__(self, service: str) -> None:
        self._service = service
        LINK_CHECKER_OUTAGE.labels(service).set(0)

    # --- checks -----------------------------------------------------------------------------------
    def check_made(self, request: CheckRequest, result: CheckResult) -> None:
        """A link event's check (the consumer)."""
        self._check(request, result)

    def retry_made(self, pending: PendingCheck, result: CheckResult) -> None:
        """A pending check's next attempt (the retry workers)."""
        self._check(pending.request, result)

    def _check(self, request: CheckRequest, result: CheckResult) -> None:
        common = {"user": request.username, "target_host": urlsplit(request.url).hostname,
                  "check_source": result.source, "attempts": result.attempts,
                  "duration_ms": round(result.duration_s * 1000, 2)}
        if isinstance(result, Published):
            verdict = result.verdict
            metrics.LINK_CHECKS.labels(self._service, verdict.result, result.source).inc()
            if result.source == "fetched":
                metrics.LINK_CHECK_DURATION.labels(self._service, verdict.result).observe(result.duration_s)
            log.info("link_checked", **common, link_status=verdict.status, check_result=verdict.result,
                     downstream_status=verdict.http_status, reason=verdict.reason,
                     published_event_id=result.event.event_id)
            return
        inconclusive = result.inconclusive
        LINK_CHECKS_INCONCLUSIVE.labels(self._service, inconclusive.failure).inc()
        if result.source == "fetched":
            metrics.LINK_CHECK_DURATION.labels(self._service, "inconclusive").observe(result.duration_s)
        details = {**common, "check_result": "inconclusive", "check_failure": inconclusive.failure,
                   "downstream_status": inconclusive.http_status, "reason": inconclusive.reason,
                   # The link-check-inconclusive event, or None: not announced while the checker doubts its network.
                   "published_event_id": result.announced.event_id if result.announced else None}
        if isinstance(result, Deferred) and result.superseded:
            log.info("link_check_inconclusive", **details, superseded=True)  # the link's newer check goes on
        elif isinstance(result, Deferred):
            log.info("link_check_inconclusive", **details, retry_in_s=round(result.retry_in_s, 3))
        elif isinstance(result, GivenUp):
            LINK_CHECKS_GIVEN_UP.labels(self._service, inconclusive.failure).inc()
            log.warning("link_check_given_up", **details, age_s=round(result.age_s, 3), why=result.why)

    # --- the checker's own network ----------------------------------------------------------------
    def watch_changed(self, event: str, status: NetworkStatus, details: dict[str, Any]) -> None:
        LINK_CHECKER_OUTAGE.labels(self._service).set(1 if status.state == "outage" else 0)
        fields = {"check_failure": status.failure, "checks": status.checks, "failing": status.failing,
                  "paused": status.paused, **details}
        getattr(log, _WATCH_LEVELS.get(event, "info"))(event, **fields)

    def retries_pending(self, size: int) -> None:
        LINK_CHECK_RETRIES_PENDING.labels(self._service).set(size)


def network_readiness(watch: NetworkWatch) -> Callable[[], dict[str, Any]]:
    """The `checker_network` readiness detail: fails (non-critically: the instance stays ready, its status is
    `degraded`) while the checker recognises its own outage."""

    def check() -> dict[str, Any]:
        status = watch.status()
        if status.state == "outage":
            since = format_timestamp(status.since) if status.since else "?"
            doing = ("letting checks through as a trial" if status.trial else "judging paused, probing")
            raise OwnNetworkOutage(f"the checker's own network is out since {since} ({status.failure}): {doing}")
        return {"state": status.state, "checks_in_window": status.checks, "failing_in_window": status.failing}

    return check
