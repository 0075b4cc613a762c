"""Prometheus metrics, one dictionary for every service (docs/metrics.md).

Under gunicorn each worker is a process, so the serving entry point sets PROMETHEUS_MULTIPROC_DIR
before this module is imported and /metrics aggregates all workers with MultiProcessCollector.
"""
from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# RED metrics for every HTTP route.
HTTP_REQUESTS = Counter("delinkcious_http_requests_total",
                        "HTTP requests handled, by method, route template and status code.",
                        ["service", "method", "route", "status"])
HTTP_ERRORS = Counter("delinkcious_http_errors_total",
                      "HTTP requests answered with a 5xx status (server-side errors).",
                      ["service", "method", "route", "status"])
HTTP_DURATION = Histogram("delinkcious_http_request_duration_seconds",
                          "Time from request received to response produced.", ["service", "method", "route"],
                          buckets=_LATENCY_BUCKETS)

# RED metrics for every gRPC method.
GRPC_REQUESTS = Counter("delinkcious_grpc_requests_total", "gRPC calls handled, by full method name and status code.",
                        ["service", "method", "code"])
GRPC_DURATION = Histogram("delinkcious_grpc_request_duration_seconds", "Time from call received to response produced.",
                          ["service", "method"], buckets=_LATENCY_BUCKETS)

# Events.
EVENTS_PUBLISHED = Counter("delinkcious_events_published_total",
                           "Events published to JetStream (acknowledged by the server).", ["service", "subject"])
EVENTS_CONSUMED = Counter("delinkcious_events_consumed_total",
                          "Events taken from JetStream, by outcome: processed, duplicate, rejected (poison), retried, "
                          "deferred (asked for later), abandoned (given back at shutdown).",
                          ["service", "consumer", "outcome"])
EVENT_HANDLING_DURATION = Histogram("delinkcious_event_handling_duration_seconds",
                                    "Time spent handling one consumed event.", ["service", "consumer"],
                                    buckets=_LATENCY_BUCKETS)
FEED_FANOUT_FOLLOWERS = Histogram("delinkcious_feed_fanout_followers",
                                  "Feeds one link event was written to (fan-out on write).", ["service"],
                                  buckets=(0, 1, 10, 100, 1000, 10000, 100000))
FEED_FANOUT_DURATION = Histogram("delinkcious_feed_fanout_duration_seconds",
                                 "Time to write one link event to every follower's feed.", ["service"],
                                 buckets=_LATENCY_BUCKETS)
OUTBOX_PENDING = Gauge("delinkcious_outbox_pending_events", "Events committed to the outbox and not yet published.",
                       ["service"], multiprocess_mode="livemax")
OUTBOX_LAG = Gauge("delinkcious_outbox_lag_seconds",
                   "Age of the oldest unpublished outbox event (0 when none is pending).", ["service"],
                   multiprocess_mode="livemax")
OUTBOX_PUBLISH_FAILURES = Counter("delinkcious_outbox_publish_failures_total",
                                  "Outbox relay batches that failed to publish (broker or database unavailable).",
                                  ["service"])
CONSUMER_PENDING = Gauge("delinkcious_consumer_pending_messages",
                         "Messages of a durable consumer not yet acknowledged: waiting to be delivered plus delivered "
                         "and unacknowledged (JetStream num_pending + num_ack_pending).", ["service", "consumer"],
                         multiprocess_mode="livemax")

# The outcomes of a consumed event (the `outcome` label): consumers create every one at start-up, so each series
# exists at 0 and increase() counts the first rejected event too.
EVENT_OUTCOMES = ("processed", "duplicate", "rejected", "retried", "deferred", "abandoned")

# Projections rebuilt from the services that own their facts (news' follower projection and feeds).
PROJECTION_REBUILDS = Counter(
    "delinkcious_projection_rebuilds_total",
    "Rebuilds of a projection from the services that own its facts, by what started them (startup, periodic, "
    "noticed, command) and how they ended (completed, failed, aborted).", ["service", "trigger", "outcome"])
PROJECTION_REBUILD_DURATION = Histogram(
    "delinkcious_projection_rebuild_duration_seconds", "Time a completed rebuild of a projection took.",
    ["service"], buckets=(0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0))
PROJECTION_COMPLETE = Gauge(
    "delinkcious_projection_complete",
    "1 while the projection's store holds its generation marker (known complete), 0 while it is missing (a new or "
    "emptied store, being rebuilt).", ["service"], multiprocess_mode="livemax")

# Link checks (link-checker).
LINK_CHECKS = Counter("delinkcious_link_checks_total",
                      "Link checks answered, by result (valid, invalid, refused) and source (fetched, cached).",
                      ["service", "result", "source"])
LINK_CHECK_DURATION = Histogram("delinkcious_link_check_duration_seconds",
                                "Time to check one URL by fetching it: every attempt, redirect, back-off and "
                                "politeness wait.", ["service", "result"],
                                buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0))
LINK_CHECKS_INCONCLUSIVE = Counter(
    "delinkcious_link_checks_inconclusive_total",
    "Link check attempts that said nothing about the link (no verdict published; tried again later), by reason: "
    "timeout, connection, network, dns, tls, http_429, http_5xx, http_4xx, http_other, redirects, and "
    "host_not_found or tls_name_mismatch while the checker's own network is in doubt.", ["service", "reason"])
LINK_CHECKS_GIVEN_UP = Counter(
    "delinkcious_link_checks_given_up_total",
    "Link checks given up without a verdict (too many inconclusive attempts, or too old), by the reason of the "
    "last attempt: the link keeps its last conclusive status.", ["service", "reason"])
LINK_CHECK_RETRIES_PENDING = Gauge(
    "delinkcious_link_check_retries_pending",
    "Inconclusive checks waiting in the retry queue for their next attempt (one queue in Redis shared by every "
    "replica: aggregate with max).", ["service"], multiprocess_mode="livemax")
LINK_CHECKER_OUTAGE = Gauge(
    "delinkcious_link_checker_outage",
    "1 while the link checker recognises an outage of its own network and judges no link, else 0.", ["service"],
    multiprocess_mode="livemax")

# The gateway's protection of itself and of the services it calls.
CIRCUIT_BREAKER_STATE = Gauge(
    "delinkcious_circuit_breaker_state",
    "State of the gateway's circuit breaker for a dependency: 0 closed, 1 half-open (a probe call in flight), "
    "2 open (calls refused at once with 503). Per process: max says whether any worker's breaker is open.",
    ["service", "dependency"], multiprocess_mode="livemax")
RATE_LIMIT_REJECTIONS = Counter(
    "delinkcious_rate_limit_rejections_total",
    "Requests refused with 429 by a rate limit, by the limit that refused them: per_address or per_user.",
    ["service", "limit"])
RATE_LIMITS = ("per_address", "per_user")


def render_latest() -> tuple[bytes, str]:
    """The exposition text for /metrics: all workers' samples when running multi-process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (called by the gunicorn master when a worker exits)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
