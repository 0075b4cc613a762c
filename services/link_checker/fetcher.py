"""Fetching adapter: one HTTP request to a URL the address policy allows, and only there.

Server-side request forgery guard: the host is resolved once, every address it resolves to is
checked (AddressPolicy), and the TCP connection goes to one of those checked addresses. The original
host name is still sent as the Host header and, for HTTPS, as SNI and the name the certificate must
match. So a DNS answer that changes between the check and the connection (DNS rebinding) cannot
redirect the request. Redirects are not followed here: the checker asks again for every hop, and
every hop is resolved and checked again.

Every failure is classified (domain.py's kinds): a name that does not exist (NXDOMAIN) and a trusted certificate
for another name are conclusive; a resolver failure, a timeout, a refused or reset connection, an unreachable
network and any other TLS failure say nothing about the link. With the process's StopSignal, a lookup or a
request in progress is abandoned as soon as the process begins to stop (StopRequested).
"""
from __future__ import annotations

import errno
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import quote, urlsplit

import certifi
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProtocolError
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.ssl_match_hostname import CertificateError

from ..kit.core.urls import DEFAULT_PORTS
from ..kit.messaging.stopping import StopSignal
from ..kit.observability.tracing import client_span
from .domain import (
    CONNECTION,
    DNS,
    HOST_NOT_FOUND,
    INVALID_NAME,
    NETWORK,
    TIMEOUT,
    TLS,
    TLS_NAME_MISMATCH,
    AddressPolicy,
    Reply,
)
from .service import AddressRefused, Fetcher, FetchFailed

# resolve(host, port, timeout_s) -> addresses, in the resolver's order of preference.
Resolve = Callable[[str, int, float], list[str]]

_MAX_ADDRESSES_TRIED = 3
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


# getaddrinfo's answers that mean the name has no address (NXDOMAIN, or no record of an address): conclusive.
# Any other error (EAI_AGAIN: SERVFAIL or no answer from the resolver, EAI_FAIL, EAI_SYSTEM) is the resolver's.
_NO_SUCH_NAME = frozenset({socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)})
# connect() errors that say the checker's own network cannot reach the host, rather than the host refusing.
_UNREACHABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN})
# OpenSSL's verification results for a certificate that is not for the name (or address) asked.
_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64
# How often a wait looks at the stop signal.
_STOP_POLL_S = 0.1


class SystemResolver:
    """getaddrinfo with a timeout (it has none of its own: it runs in a small thread pool)."""

    def __init__(self, max_concurrent: int = 16, *, stopping: StopSignal | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="dns")
        self._stopping = stopping

    def __call__(self, host: str, port: int, timeout_s: float) -> list[str]:
        future = self._executor.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM,
                                       proto=socket.IPPROTO_TCP)
        deadline = time.monotonic() + max(0.001, timeout_s)
        while True:
            remaining = deadline - time.monotonic()
            try:
                infos = future.result(timeout=max(0.001, min(remaining, _STOP_POLL_S) if self._stopping else remaining))
                break
            except FutureTimeout:
                if self._stopping is not None:
                    self._stopping.raise_if_requested()
                if time.monotonic() >= deadline:
                    raise FetchFailed(f"DNS lookup of {host} timed out", DNS) from None
            except socket.gaierror as exc:
                if exc.errno in _NO_SUCH_NAME:
                    raise FetchFailed(f"host not found: {host}", HOST_NOT_FOUND, conclusive=True) from None
                raise FetchFailed(f"DNS lookup of {host} failed: {exc.strerror}", DNS) from None
            except (UnicodeError, ValueError) as exc:
                raise FetchFailed(f"invalid host name: {host[:100]}", INVALID_NAME, conclusive=True) from exc
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class AddressGuard:
    """Resolves a host and checks every address against the policy."""

    def __init__(self, policy: AddressPolicy, resolve: Resolve) -> None:
        self._policy = policy
        self._resolve = resolve

    def addresses(self, host: str, port: int, timeout_s: float) -> list[str]:
        try:
            addresses = [str(ipaddress.ip_address(host))]  # a literal address needs no lookup
        except ValueError:
            addresses = self._resolve(host, port, timeout_s)
        if not addresses:
            raise FetchFailed(f"host not found: {host}", HOST_NOT_FOUND, conclusive=True)
        refusal = self._policy.refusal_of_any(host, addresses)
        if refusal is not None:
            raise AddressRefused(refusal)
        return addresses


class _NoConnection(Exception):
    """This address did not take the connection; another address of the host may."""

    def __init__(self, reason: str, failure: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure


class PinnedHttpFetcher(Fetcher):
    def __init__(self, guard: AddressGuard, *, user_agent: str, ca_certs: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic, stopping: StopSignal | None = None) -> None:
        self._guard = guard
        self._user_agent = user_agent
        self._ca_certs = ca_certs or certifi.where()
        self._monotonic = monotonic
        self._stopping = stopping if stopping is not None else StopSignal()

    def fetch(self, method: str, url: str, *, connect_timeout: float, timeout: float) -> Reply:
        # A span of the kit's: this fetch uses urllib3's connections directly, which no instrumentation sees (and so
        # carries no trace context to the outside world).
        with client_span(f"{method} (link check)", **{"http.request.method": method,
                                                     "server.address": urlsplit(url).hostname or ""}) as span:
            reply = self._fetch(method, url, connect_timeout=connect_timeout, timeout=timeout)
            if span is not None:
                span.set_attribute("http.response.status_code", reply.status)
            return reply

    def _fetch(self, method: str, url: str, *, connect_timeout: float, timeout: float) -> Reply:
        deadline = self._monotonic() + timeout
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or DEFAULT_PORTS[scheme]
        host = _ascii_host(parts.hostname or "")
        addresses = self._guard.addresses(host, port, min(connect_timeout, timeout))
        default_port = port == DEFAULT_PORTS[scheme]
        host_header = (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{port}")
        target = quote(parts.path or "/", safe=_PATH_SAFE) + (f"?{quote(parts.query, safe=_QUERY_SAFE)}"
                                                             if parts.query else "")
        headers = {"Host": host_header, "User-Agent": self._user_agent, "Accept": "*/*", "Connection": "close"}
        failure = _NoConnection(f"could not connect to {host}", CONNECTION)
        for address in addresses[:_MAX_ADDRESSES_TRIED]:
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                break
            try:
                return self._request(scheme, address, port, host, method, target, headers,
                                     connect_timeout=min(connect_timeout, remaining), deadline=deadline,
                                     timeout=timeout)
            except _NoConnection as exc:
                failure = exc
        if deadline - self._monotonic() <= 0:
            raise FetchFailed(_timed_out(timeout), TIMEOUT)
        raise FetchFailed(failure.reason, failure.failure)

    def _request(self, scheme: str, address: str, port: int, host: str, method: str, target: str,
                 headers: dict[str, str], *, connect_timeout: float, deadline: float, timeout: float) -> Reply:
        connection = self._connection(scheme, address, port, host, connect_timeout)
        # Socket timeouts bound each read, not the request: a server dripping its headers one byte
        # at a time would never trip them. The watchdog cuts the connection at the deadline.
        aborted = threading.Event()
        watchdog = threading.Timer(max(0.0, deadline - self._monotonic()), _abort, (connection, aborted))
        watchdog.daemon = True
        watchdog.start()
        try:
            with self._stopping.aborting(lambda: _abort(connection, aborted)):
                return self._exchange(connection, host, method, target, headers, deadline=deadline, timeout=timeout,
                                      aborted=aborted)
        finally:
            watchdog.cancel()
            connection.close()

    def _exchange(self, connection: HTTPConnection, host: str, method: str, target: str, headers: dict[str, str], *,
                  deadline: float, timeout: float, aborted: threading.Event) -> Reply:
        try:
            try:
                connection.connect()
            except CertificateError as exc:  # urllib3's own name check (assert_hostname)
                raise FetchFailed(f"TLS error: {_short(exc)}", TLS_NAME_MISMATCH, conclusive=True) from None
            except (ssl.SSLError, Urllib3SSLError) as exc:
                raise _tls_failure(exc) from None
            except NewConnectionError as exc:
                cause = exc.__cause__ or exc.__context__ or exc
                raise _NoConnection(f"could not connect to {host}: {_short(cause)}", _connect_failure(cause)) from None
            except (ConnectTimeoutError, TimeoutError):
                raise _NoConnection(f"connection to {host} timed out", TIMEOUT) from None
            except OSError as exc:
                raise _NoConnection(f"could not connect to {host}: {_short(exc)}", _connect_failure(exc)) from None
            connection.timeout = max(0.001, deadline - self._monotonic())
            connection.request(method, target, headers=headers, preload_content=False)
            response = connection.getresponse()
            return Reply(status=response.status, location=response.headers.get("Location"),
                         retry_after=response.headers.get("Retry-After"))
        except (FetchFailed, _NoConnection):
            raise
        except (TimeoutError, socket.timeout):
            raise FetchFailed(_timed_out(timeout), TIMEOUT) from None
        except (http.client.HTTPException, ProtocolError, OSError) as exc:
            if aborted.is_set():
                raise FetchFailed(_timed_out(timeout), TIMEOUT) from None
            raise FetchFailed(f"bad response from {host}: {_short(exc)}", CONNECTION) from None

    def _connection(self, scheme: str, address: str, port: int, host: str,
                    connect_timeout: float) -> HTTPConnection:
        if scheme == "https":
            return HTTPSConnection(address, port, timeout=connect_timeout, cert_reqs="CERT_REQUIRED",
                                   ca_certs=self._ca_certs, server_hostname=host, assert_hostname=host)
        return HTTPConnection(address, port, timeout=connect_timeout)


def _abort(connection: HTTPConnection, aborted: threading.Event) -> None:
    aborted.set()
    sock = connection.sock
    if sock is not None:
        try:
            # The plain socket's shutdown, also for a TLS socket: it wakes a blocked read at once.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


def _ascii_host(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise FetchFailed(f"invalid host name: {host[:100]}", INVALID_NAME, conclusive=True) from None


def _tls_failure(exc: BaseException) -> FetchFailed:
    """A certificate for another name is conclusive; any other TLS failure (an untrusted or expired certificate,
    a failed handshake) may be the checker's own trust store, clock or an intercepting proxy: inconclusive."""
    verification = exc if isinstance(exc, ssl.SSLCertVerificationError) else exc.__cause__ or exc.__context__
    if isinstance(verification, ssl.SSLCertVerificationError) and verification.verify_code in (
            _X509_V_ERR_HOSTNAME_MISMATCH, _X509_V_ERR_IP_ADDRESS_MISMATCH):
        return FetchFailed(f"TLS error: {_short(verification)}", TLS_NAME_MISMATCH, conclusive=True)
    if isinstance(verification, CertificateError):
        return FetchFailed(f"TLS error: {_short(verification)}", TLS_NAME_MISMATCH, conclusive=True)
    return FetchFailed(f"TLS error: {_short(exc)}", TLS)


def _connect_failure(exc: BaseException) -> str:
    return NETWORK if getattr(exc, "errno", None) in _UNREACHABLE_ERRNOS else CONNECTION


def _timed_out(timeout: float) -> str:
    return f"timed out: no answer within {timeout:g} s"


def _short(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    text = (strerror.lower() if isinstance(strerror, str) and strerror else str(exc)) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
