"""The gateway's calls to the internal services: caller identity, timeouts, retries for idempotent
reads only, and a circuit breaker per dependency. Whatever goes wrong downstream reaches the client
as a 503 with Retry-After (or as the downstream's own 4xx answer), never as a hang or a 500."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import timezone
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ..catalogue import get_service
from ..contracts.events import LINK_EVENTS
from ..contracts.news.v1 import news_pb2, news_pb2_grpc
from ..kit.core.clock import format_timestamp
from ..kit.core.errors import InvalidInput, ServiceError, Unavailable
from ..kit.observability import metrics
from ..kit.observability.logs import get_logger
from ..kit.serving.grpc_client import GrpcClient
from ..kit.serving.http_client import ServiceClient, ServiceResponse

log = get_logger(__name__)
T = TypeVar("T")

SERVICE = get_service("api-gateway").name  # the `service` label of the breaker's gauge
# delinkcious_circuit_breaker_state's values (docs/metrics.md): the larger, the worse, so max over workers tells.
BREAKER_STATE_VALUES = {"closed": 0, "half-open": 1, "open": 2}

READ_METHODS = frozenset({"GET", "HEAD"})
# The codes an internal service answers when it refuses the gateway itself (kit/callers.py).
CALLER_REFUSED = frozenset({"unauthenticated", "forbidden"})
# gRPC answers about the request itself: the client's 400, never counted against the breaker. Every other code
# (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED, ...) is a failure of the dependency.
GRPC_INVALID_REQUEST = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})
GRPC_CALLER_REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


class DownstreamError(ServiceError):
    """A 4xx answer of an internal service, passed on to the client as it is."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message") or "request refused"), code=str(body.get("code") or "error"))
        self.status = status
        self.details = {key: value for key, value in body.items() if key not in ("message", "code")}


class _Failure(Exception):
    """Counts against the circuit breaker: the dependency failed (as opposed to refusing the request)."""


class BreakerOpen(Exception):
    """The breaker refused the call without making it."""

    def __init__(self, name: str, retry_after_s: int) -> None:
        super().__init__(f"{name} is unavailable")
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    """`failures` consecutive failed calls open the breaker: calls are then refused at once (BreakerOpen) for an
    open period of `reset_s`; the next call is then let through alone as a probe (half-open), and closes the
    breaker if it succeeds. A failed probe opens it again for twice the previous period, at most `max_reset_s`
    (exponential backoff while the dependency stays down), so a dependency that comes back is called again within
    `max_reset_s` at the latest. Only exceptions for which `is_failure` holds count as failures; any other outcome
    (an answer, a refusal the dependency sent about the request) counts as a success.

    Why not a library: pybreaker's `CircuitBreaker.call` (1.4) holds the breaker's lock for the whole call, so a
    worker has at most one call in flight per dependency and one slow call stalls all others, and its open period
    is fixed; the `circuitbreaker` package takes no lock at all (its counts race) and lets every caller through
    once the reset time has passed, where one probe should go; purgatory is built for asyncio. Here the lock
    guards only reads and changes of the state; calls run concurrently."""

    def __init__(self, name: str, *, failures: int, reset_s: float, is_failure: Callable[[Exception], bool],
                 max_reset_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._failures_to_open = failures
        self._reset_s = reset_s
        self._max_reset_s = max(reset_s, max_reset_s if max_reset_s is not None else reset_s)
        self._is_failure = is_failure
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive_failures = 0
        self._opened_at: float | None = None  # None while closed
        self._open_for_s = reset_s  # the current open period: grows while probes fail
        self._probe_in_flight = False
        self._gauge = metrics.CIRCUIT_BREAKER_STATE.labels(SERVICE, name)
        self._gauge.set(BREAKER_STATE_VALUES["closed"])  # the series exists from start-up
        self._published = "closed"

    @property
    def state(self) -> str:
        """`closed`, `open` or `half-open` (a probe is in flight), as the readiness detail shows it."""
        with self._lock:
            return self._current_state()

    def _current_state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._probe_in_flight else "open"

    def _publish_state(self) -> None:
        """Sets the gauge when the state changed (under the lock, so changes are published in order)."""
        state = self._current_state()
        if state != self._published:
            self._published = state
            self._gauge.set(BREAKER_STATE_VALUES[state])

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        is_probe = self._admit()
        failed: bool | None = None  # stays None if the call was interrupted (e.g. the worker is shutting down)
        try:
            result = function(*args, **kwargs)
            failed = False
            return result
        except Exception as error:
            failed = self._is_failure(error)
            raise
        finally:
            self._settle(is_probe, failed)

    def _admit(self) -> bool:
        """Whether the call is the probe; BreakerOpen if it may not be made."""
        with self._lock:
            if self._opened_at is None:
                return False
            open_for = self._opened_at + self._open_for_s - self._clock()
            if open_for > 0 or self._probe_in_flight:
                raise BreakerOpen(self.name, retry_after_s=max(1, math.ceil(open_for)))
            self._probe_in_flight = True
            self._publish_state()
            return True

    def _settle(self, is_probe: bool, failed: bool | None) -> None:
        with self._lock:
            self._record(is_probe, failed)
            self._publish_state()

    def _record(self, is_probe: bool, failed: bool | None) -> None:
        """A call's outcome (None: interrupted), under the lock."""
        if is_probe:
            self._probe_in_flight = False
        if failed is None:
            return
        if not failed:
            self._consecutive_failures = 0
            if is_probe:
                self._opened_at, self._open_for_s = None, self._reset_s
                log.info("breaker_closed", dependency=self.name)
            return
        self._consecutive_failures += 1
        # A call that began before the breaker opened and fails after does not extend the open time.
        if is_probe:
            self._open_for_s = min(self._open_for_s * 2, self._max_reset_s)
        elif self._opened_at is not None or self._consecutive_failures < self._failures_to_open:
            return
        self._opened_at = self._clock()
        log.warning("breaker_opened", dependency=self.name, failures=self._consecutive_failures,
                        retry_in_s=self._open_for_s)


def breaker(name: str, *, failures: int, reset_s: float, max_reset_s: float) -> CircuitBreaker:
    return CircuitBreaker(name, failures=failures, reset_s=reset_s, max_reset_s=max_reset_s,
                          is_failure=lambda error: isinstance(error, _Failure))


class RestDependency:
    def __init__(self, name: str, base_url: str, caller_token: str, *, timeout_s: float,
                 failures: int, reset_s: float, max_reset_s: float | None = None) -> None:
        self.name = name
        # One retry at most: with the timeout it bounds how long a client waits for a 503.
        self._client = ServiceClient(base_url, caller_token=caller_token, read_timeout=timeout_s,
                                     retries=1, retry_methods=READ_METHODS)
        self._breaker = breaker(name, failures=failures, reset_s=reset_s, max_reset_s=max_reset_s or reset_s)

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """(status, JSON body or None) of a successful call; DownstreamError for its 4xx answers."""
        try:
            response = self._breaker.call(self._send, method, path, **kwargs)
        except BreakerOpen as refused:
            raise Unavailable(str(refused), retry_after=refused.retry_after_s) from None
        except _Failure as failure:
            raise Unavailable(f"{self.name} is unavailable") from failure.__cause__
        body = _json(response)
        if response.status_code >= 400:
            if isinstance(body, dict) and body.get("code") in CALLER_REFUSED:
                # Our own caller identity was refused: a deployment problem, not the client's.
                log.error("downstream_refused_caller", dependency=self.name, status=response.status_code)
                raise Unavailable(f"{self.name} is unavailable")
            raise DownstreamError(response.status_code, body if isinstance(body, dict) else {})
        return response.status_code, body

    def _send(self, method: str, path: str, **kwargs: Any) -> ServiceResponse:
        try:
            response = self._client.request(method, path, **kwargs)
        except Unavailable as exc:
            raise _Failure() from exc
        if response.status_code >= 500:
            log.warning("downstream_failed", dependency=self.name, status=response.status_code)
            raise _Failure() from None
        return response

    @property
    def state(self) -> str:
        return self._breaker.state

    def close(self) -> None:
        self._client.close()


def _json(response: ServiceResponse) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


# The proto's enum names are the event type names in capitals (LINK_ADDED for link_added).
_EVENT_TYPE_NAMES = {news_pb2.EventType.Value(contract.event_type.upper()): contract.event_type
                     for contract in LINK_EVENTS}


class NewsDependency:
    """The news service over gRPC."""

    name = "news"

    def __init__(self, address: str, caller_token: str, *, timeout_s: float, failures: int, reset_s: float,
                 max_reset_s: float | None = None) -> None:
        # GetNews is a read: retried once when the server is unavailable.
        self._client = GrpcClient(address, news_pb2_grpc.NewsServiceStub, caller_token=caller_token,
                                  timeout_s=timeout_s, retries=1)
        self._breaker = breaker("news", failures=failures, reset_s=reset_s, max_reset_s=max_reset_s or reset_s)

    def get_news(self, username: str, start_token: str, limit: int) -> dict[str, Any]:
        request = news_pb2.GetNewsRequest(username=username, start_token=start_token, limit=limit)
        try:
            response = self._breaker.call(self._get, request)
        except BreakerOpen as refused:
            raise Unavailable(str(refused), retry_after=refused.retry_after_s) from None
        except _Failure as failure:
            raise Unavailable("news is unavailable") from failure.__cause__
        return {
            "events": [
                {"event_type": _EVENT_TYPE_NAMES.get(event.event_type, "unknown"), "username": event.username,
                 "url": event.url, "title": event.title, "timestamp": _timestamp(event.timestamp),
                 "event_id": event.event_id}
                for event in response.events
            ],
            "next_token": response.next_token or None,
        }

    def _get(self, request: news_pb2.GetNewsRequest) -> news_pb2.GetNewsResponse:
        try:
            return self._client.call(lambda stub: stub.GetNews, request, idempotent=True)
        except grpc.RpcError as error:
            code = error.code()
            if code in GRPC_INVALID_REQUEST:
                # The request's own fault (a bad page token, say): that client's 400, not a failure of news.
                field, _, problem = (error.details() or "").partition(": ")
                raise InvalidInput(field or "request", problem or "invalid") from None
            if code in GRPC_CALLER_REFUSED:
                # Our own caller identity was refused: a deployment problem, neither the client's nor an outage.
                log.error("downstream_refused_caller", dependency="news", status=code.name)
                raise Unavailable("news is unavailable") from None
            log.warning("downstream_failed", dependency="news", status=code.name)
            raise _Failure() from error

    @property
    def state(self) -> str:
        return self._breaker.state

    def close(self) -> None:
        self._client.close()


def _timestamp(value: Timestamp) -> str:
    return format_timestamp(value.ToDatetime(tzinfo=timezone.utc))
