"""Outgoing HTTP for internal calls: timeouts always, retries only for idempotent methods, and the
request id and caller identity on every call.

Built on urllib3's connection pool directly. requests would add, on every call, what an internal call never
uses and pays for anyway (a cookie jar, redirects, netrc and proxy look-ups in the environment): 1.5 ms of CPU
per call against 0.4 ms on the development machine. So an internal call never goes through an HTTP(S)_PROXY
of the environment, a redirect is answered rather than followed, and an https:// service is verified against
the system's trust store (SSL_CERT_FILE / SSL_CERT_DIR).

Pooled keep-alive connections: the services' gunicorn closes a connection after it has been idle for its
keep-alive (5 s, kit/serving/gunicorn.py). A client that reuses such a connection just as the server closes it
gets no answer, although the server never read the request. So a connection idle for longer than
IDLE_CONNECTION_LIMIT_S is not reused (the client decides, well before the server closes it), and a request
whose reused connection was closed before any answer arrived (a server restart, a keep-alive shorter than we
think) is sent once more on a fresh connection, whatever its method. Otherwise only idempotent methods are retried,
and only when the service did not take the request (a refused connection) or answered 502/503/504: never after a
read timeout."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from json import dumps, loads
from typing import Any
from urllib.parse import urlencode

from urllib3 import HTTPConnectionPool, HTTPHeaderDict, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError, MaxRetryError, ProtocolError
from urllib3.util import parse_url
from urllib3.util.retry import Retry

from ..core.errors import Unavailable
from ..observability.context import outgoing_headers
from ..observability.logs import get_logger
from .callers import CALLER_TOKEN_HEADER

log = get_logger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Well below the servers' keep-alive (gunicorn.py), so our side always gives up an idle connection first.
IDLE_CONNECTION_LIMIT_S = 2.0


class ClosedBeforeAnswering(ConnectionResetError):
    """A reused keep-alive connection was closed by the server before any byte of an answer arrived."""


class _ReuseAware:
    """A connection that knows whether it is being reused, and since when it has been idle in the pool."""

    answered_on_this_socket = False
    idle_since: float | None = None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.answered_on_this_socket = False

    def close(self) -> None:
        super().close()  # type: ignore[misc]
        self.answered_on_this_socket, self.idle_since = False, None

    def getresponse(self) -> Any:
        reused = self.answered_on_this_socket  # read first: http.client closes the connection when this fails
        try:
            response = super().getresponse()  # type: ignore[misc]
        except ConnectionResetError as error:  # http.client.RemoteDisconnected is one too
            if reused:
                raise ClosedBeforeAnswering(str(error)) from error
            raise
        self.answered_on_this_socket = True
        return response


class _HTTPConnection(_ReuseAware, HTTPConnection):
    pass


class _HTTPSConnection(_ReuseAware, HTTPSConnection):
    pass


class _ReuseAwarePool:
    """Does not hand out a connection idle for longer than `max_idle_s`, nor a pooled one for the resend after a
    reused connection was closed (the other pooled ones may be just as stale)."""

    def __init__(self, *args: Any, max_idle_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_idle_s = max_idle_s
        self._resending = threading.local()  # the resend happens in the thread of the failed attempt

    def resend_on_fresh_connection(self) -> None:
        self._resending.active = True

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        resending, self._resending.active = getattr(self._resending, "active", False), False
        idle_since = getattr(conn, "idle_since", None)
        if resending or (idle_since is not None and time.monotonic() - idle_since > self.max_idle_s):
            conn.close()  # reconnects when used
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.idle_since = time.monotonic()
        super()._put_conn(conn)  # type: ignore[misc]


class _HTTPPool(_ReuseAwarePool, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_ReuseAwarePool, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Retry(Retry):
    """urllib3's Retry, plus one resend of a request whose reused connection was closed before answering: the
    server never processed it, so this is safe for any method and does not use up the retries."""

    def __init__(self, *args: Any, resent_after_closed_connection: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resent_after_closed_connection = resent_after_closed_connection

    def new(self, **kwargs: Any) -> _Retry:
        kwargs.setdefault("resent_after_closed_connection", self.resent_after_closed_connection)
        return super().new(**kwargs)

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> _Retry:
        if (not self.resent_after_closed_connection and isinstance(error, ProtocolError)
                and any(isinstance(arg, ClosedBeforeAnswering) for arg in error.args)
                and isinstance(_pool, _ReuseAwarePool)):
            log.info("resending_after_closed_connection", method=method, url=url)
            _pool.resend_on_fresh_connection()
            return self.new(resent_after_closed_connection=True)
        return super().increment(method, url, response, error, _pool, _stacktrace)


@dataclass(frozen=True)
class ServiceResponse:
    """An internal service's answer, read in full."""

    status_code: int
    headers: HTTPHeaderDict
    content: bytes

    def json(self) -> Any:
        """The body parsed as JSON; ValueError if it is not JSON."""
        return loads(self.content)


class ServiceClient:
    """Calls to one internal service at `base_url`, on one pool of keep-alive connections."""

    def __init__(
        self,
        base_url: str,
        *,
        caller_token: str | None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        retries: int = 2,
        retry_methods: frozenset[str] = IDEMPOTENT_METHODS,
        max_idle_s: float = IDLE_CONNECTION_LIMIT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        url = parse_url(self.base_url)
        self._path_prefix = url.path or ""
        retry = _Retry(
            total=retries,
            connect=retries,
            # Not after the request was sent: the service has it and may still be working on it (a costly query, a
            # database that stalls). A second request would double that work on the dependency least able to take
            # it, and make the caller wait twice the timeout for its 503.
            read=0,
            status=retries,
            backoff_factor=0.2,
            allowed_methods=retry_methods,
            status_forcelist=(502, 503, 504),
            # A service's Retry-After (5 s for a 503) is advice for end clients; an internal read that waited
            # that long before its retry would outlast its caller's timeout. The backoff above is used instead.
            respect_retry_after_header=False,
            raise_on_status=False,
        )
        pool_class = _HTTPSPool if url.scheme == "https" else _HTTPPool
        # Opens no connection yet: the client may be made in the gunicorn master (kit/serving/gunicorn.py).
        self._pool = pool_class(url.host, url.port, maxsize=32, block=False, max_idle_s=max_idle_s, retries=retry,
                                timeout=Timeout(connect=connect_timeout, read=read_timeout))
        self._headers = {CALLER_TOKEN_HEADER: caller_token} if caller_token else {}
        self._read_timeout = read_timeout

    def request(self, method: str, path: str, *, params: Any = None, json: Any = None,
                headers: dict[str, str] | None = None) -> ServiceResponse:
        """`params`: a mapping or a sequence of pairs; `json`: the body, sent as JSON. Unavailable if the service
        cannot be reached or does not answer in time (after the retries its method allows)."""
        target = f"{self._path_prefix}{path}"
        if params:
            target = f"{target}?{urlencode(params, doseq=True)}"
        all_headers = {**self._headers, **outgoing_headers(self._read_timeout), **(headers or {})}
        body = None
        if json is not None:
            body = dumps(json, allow_nan=False, separators=(",", ":")).encode()
            all_headers["Content-Type"] = "application/json"
        try:
            # An internal service's redirect is its answer, not followed.
            response = self._pool.urlopen(method, target, body=body, headers=all_headers, redirect=False)
        except HTTPError as exc:  # urllib3's: connection refused or reset, timeouts, retries exhausted
            reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
            log.warning("downstream_unavailable", url=self.base_url, method=method, error=type(reason).__name__)
            raise Unavailable(f"{self.base_url} is unavailable") from exc
        return ServiceResponse(response.status, response.headers, response.data)

    def close(self) -> None:
        self._pool.close()
