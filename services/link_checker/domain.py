"""The link checker's rules: what a check answer means (conclusive or inconclusive), when to try an
inconclusive check again, when recent checks look like the checker's own outage, where redirects may go, and
which addresses may never be fetched. Plain Python, no I/O."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from ..kit.core.errors import InvalidInput
from ..kit.core.urls import DEFAULT_PORTS

MAX_URL_LENGTH = 2048
MAX_REASON_LENGTH = 200

CheckStatus = Literal["valid", "invalid"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A HEAD answered with one of these is asked again with GET: some servers refuse HEAD.
HEAD_REFUSED_STATUSES = frozenset({403, 405, 501})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


# --- what to check ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckRequest:
    """One owner's link to check, from a link added/updated event."""

    username: str
    url: str
    link_created_at: str | None  # echoed verbatim in the result


def validate_check_url(url: Any, field_name: str = "url") -> str:
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL_LENGTH:
        raise InvalidInput(field_name, f"must be an http or https URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidInput(field_name, "is not a valid URL") from None
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname:
        raise InvalidInput(field_name, "must be an absolute http or https URL")
    return url.strip()


# --- what a check found ---------------------------------------------------------------------------
# Why a check said nothing about the link: the `reason` label of the inconclusive metrics, `check_failure` in logs.
TIMEOUT = "timeout"            # no answer within the attempt's time
CONNECTION = "connection"      # connection refused or reset, closed without an answer, a garbled answer
NETWORK = "network"            # the network or the host is unreachable from the checker
DNS = "dns"                    # the resolver failed (SERVFAIL, no answer in time): not a name that does not exist
TLS = "tls"                    # the handshake failed, or a certificate that cannot be verified (untrusted, expired)
HTTP_429 = "http_429"          # too many requests: the server limits the checker
HTTP_5XX = "http_5xx"          # the server (or a proxy on the way) failed
HTTP_4XX = "http_4xx"          # a 4xx that refuses the checker, not the link (any but 404, 410 and 429)
HTTP_OTHER = "http_other"      # a status outside 100-599
REDIRECT_LOOP = "redirects"    # more redirects than are followed (a cookie-less client often loops)
# Conclusive answers that come without an HTTP answer from the server: only believed while the checker's own
# network is not in doubt (a lying resolver or an intercepting portal could produce them for every link).
HOST_NOT_FOUND = "host_not_found"          # NXDOMAIN: the name does not exist
TLS_NAME_MISMATCH = "tls_name_mismatch"    # a trusted certificate for another name
BELIEVED_IF_NETWORK_SOUND = frozenset({HOST_NOT_FOUND, TLS_NAME_MISMATCH})
# A host name that cannot even be looked up (not valid IDNA): conclusive, and nothing was asked of the network.
INVALID_NAME = "invalid_name"

# Failures in which the checker got no answer at all: the kinds its own network outage produces.
UNANSWERED = frozenset({TIMEOUT, CONNECTION, NETWORK, DNS, TLS})
# The family name an outage is reported under when it mixes several unanswered kinds.
UNREACHABLE = "unreachable"

# The only statuses that say the resource is gone, whoever asks. Every other 4xx is about the asker.
GONE_STATUSES = frozenset({404, 410})


@dataclass(frozen=True)
class Verdict:
    """A conclusive answer about a URL: published, and the link's status follows it."""

    status: CheckStatus
    http_status: int | None = None
    reason: str | None = None
    refused: bool = False  # invalid because the address guard refused to fetch it
    # For an invalid verdict reached without an HTTP answer: HOST_NOT_FOUND, TLS_NAME_MISMATCH or INVALID_NAME.
    failure: str | None = None

    @classmethod
    def valid(cls, http_status: int) -> Verdict:
        return cls("valid", http_status)

    @classmethod
    def invalid(cls, reason: str, http_status: int | None = None, *, refused: bool = False,
                failure: str | None = None) -> Verdict:
        return cls("invalid", http_status, reason[:MAX_REASON_LENGTH], refused, failure)

    @property
    def result(self) -> str:
        """The metric label: valid, invalid or refused."""
        return "refused" if self.refused else self.status


@dataclass(frozen=True)
class Inconclusive:
    """An answer that says nothing about the link: no verdict is published, the link keeps its status, and
    the check is tried again later."""

    reason: str
    failure: str  # one of the kinds above
    http_status: int | None = None
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", self.reason[:MAX_REASON_LENGTH])


Outcome = Verdict | Inconclusive


def answered(outcome: Outcome) -> bool:
    """Whether an outcome proves the checker's network works: a conclusive answer from the server."""
    return isinstance(outcome, Verdict) and outcome.failure is None and not outcome.refused


def asked_the_network(outcome: Outcome) -> bool:
    """Whether an outcome says anything about the checker's network (a refused address or an invalid name was
    decided without it)."""
    return not (isinstance(outcome, Verdict) and (outcome.refused or outcome.failure == INVALID_NAME))


@dataclass(frozen=True)
class Redirect:
    target: str
    http_status: int


@dataclass(frozen=True)
class Reply:
    """What one HTTP request was answered: the status line and the headers that matter."""

    status: int
    location: str | None = None
    retry_after: str | None = None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from `now`: delta-seconds or an HTTP date; None if absent or malformed."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - now).total_seconds())


def redirect_target(current_url: str, location: str) -> str | None:
    """Where a redirect leads, resolved against the current URL; None if it is not an http(s) URL."""
    try:
        target = urljoin(current_url, location.strip())
        parts = urlsplit(target)
        parts.port  # noqa: B018
    except ValueError:
        return None
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname or len(target) > MAX_URL_LENGTH:
        return None
    return target


@dataclass(frozen=True)
class CheckPolicy:
    """How the answer to one attempt is judged."""

    max_redirects: int = 5

    @staticmethod
    def falls_back_to_get(reply: Reply) -> bool:
        return reply.status in HEAD_REFUSED_STATUSES

    @staticmethod
    def judge(reply: Reply, url: str, now: datetime) -> Outcome | Redirect:
        """The meaning of the final answer to one request (after the HEAD->GET fallback).

        Conclusive: 2xx and a 3xx that is not a followable redirect are valid; 404 and 410 are invalid, and so
        is a redirect to something that is not an http(s) URL. Everything else is inconclusive: 429 and 5xx
        (the server is busy or failing), and every other 4xx, which refuses the checker rather than the link
        (401/403/407 its credentials or its look as a bot, 405/406/415 its request, 408/425 its timing, 451 its
        jurisdiction, 400/414/431 a server's own limits or firewall rules)."""
        status = reply.status
        if status in REDIRECT_STATUSES and reply.location:
            target = redirect_target(url, reply.location)
            if target is None:
                return Verdict.invalid(f"HTTP {status} redirects to an unsupported URL", status)
            return Redirect(target, status)
        if 200 <= status < 400:
            return Verdict.valid(status)
        if status in GONE_STATUSES:
            return Verdict.invalid(f"HTTP {status}", status)
        retry_after = parse_retry_after(reply.retry_after, now)
        if status == 429:
            return Inconclusive("HTTP 429", HTTP_429, status, retry_after)
        if 500 <= status < 600:
            return Inconclusive(f"HTTP {status}", HTTP_5XX, status, retry_after)
        if 400 <= status < 500:
            return Inconclusive(f"HTTP {status}", HTTP_4XX, status, retry_after)
        return Inconclusive(f"unexpected HTTP status {status}", HTTP_OTHER, status)

    def too_many_redirects(self, http_status: int) -> Inconclusive:
        return Inconclusive(f"more than {self.max_redirects} redirects", REDIRECT_LOOP, http_status)


# --- trying again -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryDecision:
    """After an inconclusive attempt: try again in `delay_s`, or give up (`delay_s` None) because of `why`."""

    delay_s: float | None
    why: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """When an inconclusive check is tried again: exponential back-off with jitter, a server's Retry-After if
    it asks for longer, and a bound on attempts and on age after which the check is given up without a
    verdict (the link keeps its last conclusive status)."""

    max_attempts: int = 8
    backoff_initial_s: float = 60.0
    backoff_max_s: float = 21600.0
    retry_after_max_s: float = 3600.0
    max_age_s: float = 86400.0
    jitter: float = 0.5  # the back-off is drawn from [(1 - jitter) x d, d]: replicas and links spread out

    def decide(self, attempts: int, age_s: float, inconclusive: Inconclusive, draw: float) -> RetryDecision:
        """After `attempts` inconclusive attempts (1-based) over `age_s` seconds since the first; `draw` is a
        random number in [0, 1)."""
        if attempts >= self.max_attempts:
            noun = "attempt" if attempts == 1 else "attempts"
            return RetryDecision(None, f"{attempts} {noun}, all inconclusive")
        backoff = min(self.backoff_initial_s * 2 ** (attempts - 1), self.backoff_max_s)
        delay = backoff * (1 - self.jitter * min(max(draw, 0.0), 1.0))
        if inconclusive.retry_after_s is not None:
            delay = max(delay, min(inconclusive.retry_after_s, self.retry_after_max_s))
        if age_s + delay > self.max_age_s:
            return RetryDecision(None, f"inconclusive for {age_s:.0f} s, the next attempt would pass "
                                       f"{self.max_age_s:g} s")
        return RetryDecision(delay)

    @property
    def shortest_delay_s(self) -> float:
        """The shortest wait before any retry (the first back-off at its most jittered)."""
        return self.backoff_initial_s * (1 - self.jitter)


# --- the checker's own outage ----------------------------------------------------------------------
@dataclass(frozen=True)
class Observation:
    """One fetched check, as the outage rule sees it: when, which host, and its failure kind (None: the server
    answered)."""

    at: float  # monotonic seconds
    host: str
    failure: str | None


@dataclass(frozen=True)
class OutageSuspicion:
    failure: str  # a failure kind, or UNREACHABLE for a mix of unanswered kinds
    checks: int
    failing: int
    hosts: int


@dataclass(frozen=True)
class OutageRule:
    """When recent checks look like the checker's own outage rather than dead links: at least `min_checks`
    checks in the last `window_s` seconds, of which at least `threshold` failed the same way (one failure kind,
    or any mix of unanswered kinds: timeouts, refused connections, resolver failures ...), on at least
    `min_hosts` different hosts (so one dead site with many links is not an outage)."""

    window_s: float = 60.0
    min_checks: int = 10
    threshold: float = 0.8
    min_hosts: int = 3

    def recent(self, observations: Iterable[Observation], now: float) -> list[Observation]:
        return [seen for seen in observations if now - seen.at <= self.window_s]

    def suspicion(self, observations: Iterable[Observation], now: float) -> OutageSuspicion | None:
        recent = self.recent(observations, now)
        if len(recent) < self.min_checks:
            return None
        groups: dict[str, list[Observation]] = {}
        for seen in recent:
            if seen.failure is None:
                continue
            groups.setdefault(seen.failure, []).append(seen)
            if seen.failure in UNANSWERED:
                groups.setdefault(UNREACHABLE, []).append(seen)
        # A single kind first (the more precise reason), then the family of unanswered kinds.
        for failure, failing in sorted(groups.items(), key=lambda item: (item[0] == UNREACHABLE, -len(item[1]))):
            hosts = len({seen.host for seen in failing})
            if len(failing) >= self.threshold * len(recent) and hosts >= self.min_hosts:
                return OutageSuspicion(failure, len(recent), len(failing), hosts)
        return None

    @staticmethod
    def declared_without_probe(failure: str) -> bool:
        """Whether a suspicion may be declared an outage when there is nothing to probe: only for failures in
        which nothing answered (a conclusive-looking failure such as NXDOMAIN must be confirmed)."""
        return failure in UNANSWERED or failure == UNREACHABLE


# --- server-side request forgery guard ------------------------------------------------------------
# Cloud instance metadata endpoints: never fetched, whatever else is allowed (short of allowing every
# private address). AWS/GCP/Azure/Oracle/DigitalOcean IPv4 and AWS IPv6 (Nitro), AWS ECS task
# metadata, Alibaba Cloud.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(ipaddress.ip_address(address) for address in (
    "169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, NAT64, 6to4, Teredo (the server)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[0]
    return None


def _address_kind(address: IPAddress) -> str | None:
    """What an address is if it is not a public internet address, or None if it is one."""
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if isinstance(address, ipaddress.IPv6Address) and address in _SITE_LOCAL:
        return "a site-local address"
    if not address.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses may be connected to. By default only public internet addresses:
    never private, loopback, link-local, multicast, reserved, unspecified or cloud metadata ones,
    nor an IPv6 address standing for such an IPv4 address."""

    allow_private: bool = False  # local testing only: every address is allowed
    allowed_networks: tuple[IPNetwork, ...] = ()  # exceptions, e.g. an intranet; never metadata

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why `address` must not be fetched ("10.0.0.1 is a private address"), or None if it may be."""
        what = self._what(address)
        return f"{what[0]} is {what[1]}" if what else None

    def _what(self, address: str | IPAddress) -> tuple[IPAddress, str] | None:
        if self.allow_private:
            return None
        ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
        embedded = _embedded_ipv4(ip)
        if ip in METADATA_ADDRESSES or embedded in METADATA_ADDRESSES:
            return ip, "a cloud metadata address"
        if any(ip in network for network in self.allowed_networks) or (
                embedded is not None and any(embedded in network for network in self.allowed_networks)):
            return None
        # An IPv4-mapped or NAT64 address is the IPv4 address it carries; for 6to4 and Teredo both
        # the tunnel address and the carried one must be public.
        if embedded is not None and (ip.ipv4_mapped is not None or ip in _NAT64):  # type: ignore[union-attr]
            kind = _address_kind(embedded)
        else:
            kind = _address_kind(ip) or (_address_kind(embedded) if embedded is not None else None)
        return (ip, kind) if kind else None

    def refusal_of_any(self, host: str, addresses: list[str]) -> str | None:
        """Every address a host resolves to must be allowed: the connection may go to any of them."""
        for address in addresses:
            what = self._what(address)
            if what is not None:
                ip, kind = what
                return f"{host} resolves to {ip}, {kind}" if host != str(ip) else f"{ip} is {kind}"
        return None


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """A comma-separated list of CIDR networks (or single addresses); raises ValueError naming the
    first bad entry."""
    networks: list[IPNetwork] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP network") from None
    return tuple(networks)
