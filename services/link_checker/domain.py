"""The link checker's rules: what a check answer means, when to retry, where redirects may go, and
which addresses may never be fetched. Plain Python, no I/O."""
from __future__ import annotations

import ipaddress
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
@dataclass(frozen=True)
class Verdict:
    """The final answer about a URL."""

    status: CheckStatus
    http_status: int | None = None
    reason: str | None = None
    refused: bool = False  # invalid because the address guard refused to fetch it

    @classmethod
    def valid(cls, http_status: int) -> Verdict:
        return cls("valid", http_status)

    @classmethod
    def invalid(cls, reason: str, http_status: int | None = None, *, refused: bool = False) -> Verdict:
        return cls("invalid", http_status, reason[:MAX_REASON_LENGTH], refused)

    @property
    def result(self) -> str:
        """The metric label: valid, invalid or refused."""
        return "refused" if self.refused else self.status


@dataclass(frozen=True)
class Transient:
    """A failure that may go away: retried, and the link is invalid only once the attempts run out."""

    reason: str
    http_status: int | None = None
    retry_after_s: float | None = None


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
    """How answers are judged and how hard to try."""

    max_attempts: int = 3
    max_redirects: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 10.0
    retry_after_max_s: float = 30.0

    @staticmethod
    def falls_back_to_get(reply: Reply) -> bool:
        return reply.status in HEAD_REFUSED_STATUSES

    def judge(self, reply: Reply, url: str, now: datetime) -> Verdict | Transient | Redirect:
        """The meaning of the final answer to one request (after the HEAD->GET fallback)."""
        status = reply.status
        if status in REDIRECT_STATUSES and reply.location:
            target = redirect_target(url, reply.location)
            if target is None:
                return Verdict.invalid(f"HTTP {status} redirects to an unsupported URL", status)
            return Redirect(target, status)
        if 200 <= status < 400:
            return Verdict.valid(status)
        if status == 429 or 500 <= status < 600:
            return Transient(f"HTTP {status}", status, parse_retry_after(reply.retry_after, now))
        if 400 <= status < 500:
            return Verdict.invalid(f"HTTP {status}", status)
        return Verdict.invalid(f"unexpected HTTP status {status}", status)

    def too_many_redirects(self, http_status: int) -> Verdict:
        return Verdict.invalid(f"more than {self.max_redirects} redirects", http_status)

    def retry_delay(self, failed_attempt: int, transient: Transient) -> float:
        """Seconds to wait after attempt number `failed_attempt` (1-based) failed transiently:
        exponential back-off, or the server's Retry-After if longer, capped."""
        backoff = min(self.backoff_initial_s * 2 ** (failed_attempt - 1), self.backoff_max_s)
        if transient.retry_after_s is not None:
            return min(max(backoff, transient.retry_after_s), self.retry_after_max_s)
        return backoff

    def give_up(self, transient: Transient, attempts: int) -> Verdict:
        noun = "attempt" if attempts == 1 else "attempts"
        return Verdict.invalid(f"{transient.reason} (after {attempts} {noun})", transient.http_status)


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
