"""Fixtures of the link-checker tests: local target web servers, a Redis client, and checkers wired
with the real fetcher and the real Redis adapters (fast timeouts, isolated key namespaces)."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from delinkcious.contracts.events import LINK_CHECK_INCONCLUSIVE, LINK_CHECKED, Event
from delinkcious.kit.messaging.stopping import StopSignal
from delinkcious.link_checker.domain import AddressPolicy, CheckPolicy, OutageRule, RetryPolicy
from delinkcious.link_checker.fetcher import AddressGuard, PinnedHttpFetcher, Resolve, SystemResolver
from delinkcious.link_checker.redis_store import RedisHostThrottle, RedisResultCache, RedisRetryQueue
from delinkcious.link_checker.service import LinkCheckService, NetworkWatch, UrlChecker

from tests.link_checker.target import TargetServer

USER_AGENT = "Delinkcious-LinkChecker/test"
SYSTEM_RESOLVER = SystemResolver()


@pytest.fixture(scope="session")
def target() -> Iterator[TargetServer]:
    with TargetServer(slow_s=1.0) as server:
        yield server


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(certificate chain, private key, issuing CA): a certificate for the name secure.test only,
    from a throw-away CA (trustme, so no openssl command is needed)."""
    authority = trustme.CA()
    issued = authority.issue_cert("secure.test")
    directory = tmp_path_factory.mktemp("tls")
    chain, key, ca = directory / "chain.pem", directory / "key.pem", directory / "ca.pem"
    issued.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    authority.cert_pem.write_to_path(str(ca))
    return chain, key, ca


@pytest.fixture(scope="session")
def secure_target(certificate: tuple[Path, Path, Path]) -> Iterator[TargetServer]:
    with TargetServer(certificate=certificate[:2]) as server:
        yield server


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def namespace() -> str:
    """Redis keys of this test's own (results and politeness slots are not shared between tests)."""
    return f"test-{uuid.uuid4().hex[:12]}"


def fixed_resolver(table: dict[str, list[str]]) -> Resolve:
    """A resolver answering from `table`; any other name resolves as the system resolver says."""

    def resolve(host: str, port: int, timeout_s: float) -> list[str]:
        return table[host] if host in table else SYSTEM_RESOLVER(host, port, timeout_s)

    return resolve


@pytest.fixture
def make_checker(redis_client: Any, namespace: str) -> Callable[..., UrlChecker]:
    def make(*, allow_private: bool = True, allowed_networks: tuple[Any, ...] = (), resolver: Resolve | None = None,
             host_interval_s: float = 0.0, attempt_timeout_s: float = 0.3, ca_certs: str | None = None,
             max_redirects: int = 5, stopping: StopSignal | None = None) -> UrlChecker:
        guard = AddressGuard(AddressPolicy(allow_private=allow_private, allowed_networks=allowed_networks),
                             resolver or SYSTEM_RESOLVER)
        return UrlChecker(
            PinnedHttpFetcher(guard, user_agent=USER_AGENT, ca_certs=ca_certs, stopping=stopping),
            RedisHostThrottle(redis_client, interval_s=host_interval_s, max_wait_s=5.0, namespace=namespace),
            CheckPolicy(max_redirects=max_redirects),
            connect_timeout_s=min(1.0, attempt_timeout_s), attempt_timeout_s=attempt_timeout_s,
        )

    return make


class Published(list):
    """The events a service under test published, in order."""

    def __call__(self, event: Event) -> None:
        self.append(event)

    @property
    def verdicts(self) -> list[Event]:
        """The link-checked events."""
        return [event for event in self if event.subject == LINK_CHECKED]

    @property
    def attempts(self) -> list[Event]:
        """The link-check-inconclusive events."""
        return [event for event in self if event.subject == LINK_CHECK_INCONCLUSIVE]


# Retries fast enough for a test: 0.1 s, doubling, with jitter.
FAST_RETRIES = RetryPolicy(max_attempts=4, backoff_initial_s=0.1, backoff_max_s=0.4, retry_after_max_s=2.0,
                           max_age_s=30.0)


def quiet_watch() -> NetworkWatch:
    """A watch whose rule never suspects anything (tests of checks, not of outages)."""
    return NetworkWatch(OutageRule(min_checks=10**6), lambda url: None, probe_interval_s=60, probe_timeout_s=1)


@pytest.fixture
def make_service(make_checker: Callable[..., UrlChecker], redis_client: Any, namespace: str) -> Callable[..., Any]:
    """A LinkCheckService on the real Redis (cache and retry queue in this test's namespace), publishing into
    a list; returns (service, published, retry queue)."""

    def make(*, ttl_s: float = 60.0, retry_policy: RetryPolicy = FAST_RETRIES, watch: NetworkWatch | None = None,
             **checker_options: Any) -> tuple[LinkCheckService, Published, RedisRetryQueue]:
        published = Published()
        retries = RedisRetryQueue(redis_client, namespace=namespace)
        service = LinkCheckService(make_checker(**checker_options), RedisResultCache(redis_client, namespace=namespace),
                                   published, retries, watch or quiet_watch(), retry_policy=retry_policy,
                                   result_ttl_s=ttl_s, claim_lease_s=5, poll_interval_s=0.02)
        return service, published, retries

    return make
