"""Token verification: one call to the user service per token at a time, answers refreshed ahead of their expiry,
and a revoked token refused within the cache's TTL (at once after a logout here). The user service is a stand-in
that can hold a call unanswered; time is a clock the test moves."""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from delinkcious.api_gateway.app import DEFINITION
from delinkcious.api_gateway.downstream import RestDependency
from delinkcious.api_gateway.identity import TokenVerifier
from delinkcious.kit.core.errors import Unauthenticated

from tests.support.stand_in import StandInService

TOKEN = "dlk_coalesced-token"
VERIFY = ("POST", "/v1/tokens/verify")
TTL = 5.0
CALLERS = 8


@pytest.fixture
def users():
    service = StandInService()
    service.answer(*VERIFY, 200, {"user": {"username": "ann"}, "token": {}})
    yield service
    service.stop()


@pytest.fixture
def verifier(users, clock):
    dependency = RestDependency("user", users.url, "caller-token", timeout_s=60, failures=5, reset_s=10)
    yield TokenVerifier(dependency, TTL, clock=clock)
    dependency.close()


def verifications(users: StandInService) -> int:
    return len(users.asked(*VERIFY))


def all_verify_while_held(users: StandInService, verifier: TokenVerifier, callers: int) -> list[str]:
    """`callers` threads verify TOKEN at once while the user service holds every verification unanswered; the
    service answers once all of them have started."""
    hold = users.hold(*VERIFY)
    all_started = threading.Barrier(callers + 1)

    def verify() -> str:
        all_started.wait()
        return verifier.verify(TOKEN)

    with ThreadPoolExecutor(max_workers=callers) as executor:
        results = [executor.submit(verify) for _ in range(callers)]
        all_started.wait()
        assert hold.arrived.wait(10)
        assert not any(result.done() for result in results)  # without an answer they can only wait
        hold.release()
        return [result.result(timeout=30) for result in results]


def test_concurrent_requests_with_an_expired_token_share_one_verification(users, verifier, clock):
    assert verifier.verify(TOKEN) == "ann"
    clock.now += TTL  # the answer has expired
    assert all_verify_while_held(users, verifier, CALLERS) == ["ann"] * CALLERS
    assert verifications(users) == 2


def test_concurrent_requests_through_the_gateway_share_one_verification(service_environment, users):
    users.answer("GET", "/v1/users/ann", 200, {"username": "ann", "email": None, "name": None})
    settings = {"link_service_url": users.url, "user_service_url": users.url,
                "social_graph_service_url": users.url, "news_grpc_address": "127.0.0.1:1",
                "caller_token": "gateway-caller-token", "session_secret": "s" * 32, "oauth_client_id": "client",
                "oauth_client_secret": "secret", "token_cache_seconds": 60}
    hold = users.hold(*VERIFY)
    with service_environment.running(DEFINITION, **settings) as (_, app):
        def me() -> int:
            return app.test_client().get("/v1/me", headers={"Authorization": f"Bearer {TOKEN}"}).status_code

        with ThreadPoolExecutor(max_workers=CALLERS) as executor:
            results = [executor.submit(me) for _ in range(CALLERS)]
            assert hold.arrived.wait(10)
            hold.release()
            assert [result.result(timeout=30) for result in results] == [200] * CALLERS
    assert verifications(users) == 1


def test_an_answer_is_refreshed_by_one_caller_while_the_others_use_it(users, verifier, clock):
    assert verifier.verify(TOKEN) == "ann"
    clock.now += TTL * TokenVerifier.REFRESH_AFTER  # due for a refresh, not expired
    hold = users.hold(*VERIFY)
    with ThreadPoolExecutor(max_workers=1) as executor:
        refresh = executor.submit(verifier.verify, TOKEN)
        assert hold.arrived.wait(10)
        # The refresh is in flight: everyone else is answered from the cache at once.
        assert [verifier.verify(TOKEN) for _ in range(CALLERS)] == ["ann"] * CALLERS
        hold.release()
        assert refresh.result(timeout=30) == "ann"
    assert verifications(users) == 2
    clock.now += TTL * TokenVerifier.REFRESH_AFTER - 0.01  # trusted from the refresh on
    assert verifier.verify(TOKEN) == "ann"
    assert verifications(users) == 2


def test_a_busy_token_is_verified_about_once_per_ttl(users, verifier, clock):
    elapsed = 0.0
    while elapsed < 60:
        assert verifier.verify(TOKEN) == "ann"
        clock.now += 0.25
        elapsed += 0.25
    assert verifications(users) <= math.ceil(60 / (TTL * TokenVerifier.REFRESH_AFTER)) + 1


def test_a_revoked_token_is_refused_within_the_ttl(users, verifier, clock):
    verified_at = clock.now
    assert verifier.verify(TOKEN) == "ann"
    users.answer(*VERIFY, 401, {"message": "revoked", "code": "invalid_token"})  # revoked via another gateway
    clock.now = verified_at + TTL * TokenVerifier.REFRESH_AFTER - 0.01
    assert verifier.verify(TOKEN) == "ann"  # the cached answer, within the TTL
    clock.now = verified_at + TTL
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            verifier.verify(TOKEN)
        clock.now += 0.5


def test_a_revoked_token_is_refused_by_the_caller_that_refreshes_it(users, verifier, clock):
    assert verifier.verify(TOKEN) == "ann"
    users.answer(*VERIFY, 401, {"message": "revoked", "code": "invalid_token"})
    clock.now += TTL * TokenVerifier.REFRESH_AFTER
    with pytest.raises(Unauthenticated):
        verifier.verify(TOKEN)
    with pytest.raises(Unauthenticated):  # and no one is answered from the cache any more
        verifier.verify(TOKEN)


def test_forget_refuses_the_token_at_once(users, verifier):
    assert verifier.verify(TOKEN) == "ann"
    users.answer(*VERIFY, 401, {"message": "revoked", "code": "invalid_token"})
    verifier.forget(TOKEN)
    with pytest.raises(Unauthenticated):
        verifier.verify(TOKEN)


def test_an_answer_asked_for_before_a_logout_is_not_cached_after_it(users, verifier):
    hold = users.hold(*VERIFY)
    with ThreadPoolExecutor(max_workers=1) as executor:
        before_logout = executor.submit(verifier.verify, TOKEN)
        assert hold.arrived.wait(10)
        verifier.forget(TOKEN)  # the logout, while that verification is in flight
        hold.release()
        assert before_logout.result(timeout=30) == "ann"
    users.holds.clear()
    users.answer(*VERIFY, 401, {"message": "revoked", "code": "invalid_token"})
    with pytest.raises(Unauthenticated):
        verifier.verify(TOKEN)
    assert verifications(users) == 2
