"""Checking URLs for real: the real fetcher against local web servers (requests are counted on the
server side), with the request forgery guard off except where a test is about the guard. One check is one
attempt: conclusive answers are verdicts, the others are inconclusive with the kind of failure."""
from __future__ import annotations

import ipaddress
import socket
import time
import uuid

import pytest
from delinkcious.link_checker.domain import (
    CONNECTION,
    DNS,
    HOST_NOT_FOUND,
    HTTP_4XX,
    HTTP_5XX,
    HTTP_429,
    REDIRECT_LOOP,
    TIMEOUT,
    TLS,
    TLS_NAME_MISMATCH,
    Inconclusive,
    Verdict,
)
from delinkcious.link_checker.fetcher import SystemResolver
from delinkcious.link_checker.service import FetchFailed

from tests.link_checker.conftest import USER_AGENT, fixed_resolver
from tests.link_checker.target import SilentServer


def unique(path: str) -> str:
    return f"{path}/{uuid.uuid4().hex[:10]}"


def test_200_is_valid_with_one_head_request_identifying_the_checker(make_checker, target):
    path = unique("/ok")
    report = make_checker().check(target.url(path))
    assert report.outcome == Verdict.valid(200) and report.requests == 1
    [seen] = target.requests_to(path)
    assert seen.method == "HEAD"
    assert seen.headers["User-Agent"] == USER_AGENT
    assert seen.headers["Host"] == f"127.0.0.1:{target.port}"


@pytest.mark.parametrize("route, status", [("/missing", 404), ("/gone", 410)])
def test_404_and_410_are_invalid_at_once(make_checker, target, route, status):
    path = unique(route)
    assert make_checker().check(target.url(path)).outcome == Verdict.invalid(f"HTTP {status}", status)
    assert len(target.requests_to(path)) == 1


@pytest.mark.parametrize("route, expected", [
    ("/limited", Inconclusive("HTTP 429", HTTP_429, 429, 1.0)),
    ("/error", Inconclusive("HTTP 500", HTTP_5XX, 500)),
    ("/always-503", Inconclusive("HTTP 503", HTTP_5XX, 503)),
    ("/forbidden", Inconclusive("HTTP 403", HTTP_4XX, 403)),
])
def test_429_5xx_and_other_4xx_are_inconclusive_after_one_attempt(make_checker, target, route, expected):
    path = unique(route)
    assert make_checker().check(target.url(path)).outcome == expected
    methods = [seen.method for seen in target.requests_to(path)]
    assert methods == (["HEAD", "GET"] if route == "/forbidden" else ["HEAD"])  # 403 to HEAD: GET asked too


def test_head_refused_falls_back_to_get(make_checker, target):
    path = unique("/no-head")
    assert make_checker().check(target.url(path)).outcome == Verdict.valid(200)
    assert [seen.method for seen in target.requests_to(path)] == ["HEAD", "GET"]


def test_a_redirect_chain_is_followed_to_its_end(make_checker, target):
    suffix = uuid.uuid4().hex[:10]
    report = make_checker().check(target.url(f"/chain/3/{suffix}"))
    assert report.outcome == Verdict.valid(200) and report.requests == 4
    assert [len(target.requests_to(f"/chain/{hop}/{suffix}")) for hop in (3, 2, 1, 0)] == [1, 1, 1, 1]


def test_five_redirects_are_followed_and_more_are_inconclusive(make_checker, target):
    assert make_checker().check(target.url(unique("/chain/5"))).outcome == Verdict.valid(200)
    suffix = uuid.uuid4().hex[:10]
    assert make_checker().check(target.url(f"/chain/6/{suffix}")).outcome == Inconclusive(
        "more than 5 redirects", REDIRECT_LOOP, 302)
    assert target.requests_to(f"/chain/0/{suffix}") == []  # the sixth redirect is not followed
    loop = unique("/loop")
    assert make_checker().check(target.url(loop)).outcome.failure == REDIRECT_LOOP
    assert len(target.requests_to(loop)) == 6


def test_a_slow_server_is_an_inconclusive_timeout(make_checker, target):
    path = unique("/slow")
    started = time.monotonic()
    outcome = make_checker(attempt_timeout_s=0.3).check(target.url(path)).outcome
    assert outcome == Inconclusive("timed out: no answer within 0.3 s", TIMEOUT)
    assert len(target.requests_to(path)) == 1
    assert time.monotonic() - started < 0.9  # not the server's 1 s


def test_a_server_that_accepts_and_never_answers_is_an_inconclusive_timeout(make_checker):
    with SilentServer() as silent:
        started = time.monotonic()
        outcome = make_checker(attempt_timeout_s=0.3).check(silent.url("/x")).outcome
        assert outcome == Inconclusive("timed out: no answer within 0.3 s", TIMEOUT)
        assert silent.connections == 1 and time.monotonic() - started < 0.9


def test_the_deadline_covers_the_whole_answer_not_each_read(make_checker, target):
    started = time.monotonic()
    outcome = make_checker(attempt_timeout_s=0.5).check(target.url(unique("/drip"))).outcome
    assert outcome == Inconclusive("timed out: no answer within 0.5 s", TIMEOUT)
    assert time.monotonic() - started < 1.5  # the server would take 3.5 s, 0.1 s per byte


def test_a_closed_or_refused_connection_is_inconclusive(make_checker, target):
    closed = make_checker().check(target.url(unique("/close"))).outcome
    assert isinstance(closed, Inconclusive) and closed.failure == CONNECTION
    assert closed.reason.startswith("bad response from 127.0.0.1")
    refused = make_checker().check("http://127.0.0.1:1/").outcome
    assert refused == Inconclusive("could not connect to 127.0.0.1: connection refused", CONNECTION)


def test_a_name_that_does_not_exist_is_invalid_at_once(make_checker):
    report = make_checker().check("http://no-such-host.invalid/")
    assert report.outcome == Verdict.invalid("host not found: no-such-host.invalid", failure=HOST_NOT_FOUND)


@pytest.mark.parametrize("error, expected", [
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
     FetchFailed("host not found: a.example", HOST_NOT_FOUND, conclusive=True)),
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),  # SERVFAIL, resolver silent
     FetchFailed("DNS lookup of a.example failed: Temporary failure in name resolution", DNS)),
    (socket.gaierror(socket.EAI_FAIL, "Non-recoverable failure in name resolution"),
     FetchFailed("DNS lookup of a.example failed: Non-recoverable failure in name resolution", DNS)),
])
def test_the_resolver_tells_a_missing_name_from_its_own_failure(monkeypatch, error, expected):
    def getaddrinfo(*args, **kwargs):
        raise error

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    resolver = SystemResolver(max_concurrent=1)
    try:
        with pytest.raises(FetchFailed) as raised:
            resolver("a.example", 80, 1.0)
    finally:
        resolver.close()
    assert (raised.value.reason, raised.value.failure, raised.value.conclusive) == (
        expected.reason, expected.failure, expected.conclusive)


def test_a_resolver_that_does_not_answer_in_time_is_inconclusive(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: time.sleep(1.0))
    resolver = SystemResolver(max_concurrent=1)
    try:
        with pytest.raises(FetchFailed) as raised:
            resolver("a.example", 80, 0.2)
    finally:
        resolver.close()
    assert (raised.value.failure, raised.value.conclusive) == (DNS, False)


# --- the request forgery guard -------------------------------------------------------------------
def test_guard_refuses_a_private_first_hop_without_connecting(make_checker, target):
    path = unique("/ok")
    report = make_checker(allow_private=False).check(target.url(path))
    assert report.outcome == Verdict.invalid("refused: 127.0.0.1 is a loopback address", refused=True)
    assert target.requests_to(path) == []
    named = make_checker(allow_private=False, resolver=fixed_resolver({"intranet.test": ["10.1.2.3"]}))
    assert named.check("http://intranet.test/").outcome.reason == (
        "refused: intranet.test resolves to 10.1.2.3, a private address")
    metadata = make_checker(allow_private=False).check("http://169.254.169.254/latest/meta-data/")
    assert metadata.outcome.reason == "refused: 169.254.169.254 is a cloud metadata address"


def test_guard_checks_every_redirect_hop(make_checker, target):
    # The first hop is allowed (127.0.0.1 is an allowed network here); its redirects are checked
    # again: to a name resolving to a private address, and to another loopback address.
    checker = make_checker(allow_private=False, allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),),
                           resolver=fixed_resolver({"internal.test": ["10.9.8.7"]}))
    to_named = target.url(f"/to?url=http://internal.test:{target.port}/ok/x")
    assert checker.check(to_named).outcome == Verdict.invalid(
        "refused: internal.test resolves to 10.9.8.7, a private address", refused=True)
    to_loopback = target.url(f"/to?url=http://127.0.0.2:{target.port}/ok/y")
    assert checker.check(to_loopback).outcome.reason == "refused: 127.0.0.2 is a loopback address"
    to_metadata = target.url("/to?url=http://169.254.169.254/latest/meta-data/")
    assert checker.check(to_metadata).outcome.reason == "refused: 169.254.169.254 is a cloud metadata address"
    assert target.requests_to("/ok/x") == [] and target.requests_to("/ok/y") == []


def test_connection_goes_to_the_checked_address_with_the_original_host_name(make_checker, target):
    # The name resolves (once) to 127.0.0.1; the request reaches it with the name in Host.
    path = unique("/ok")
    checker = make_checker(resolver=fixed_resolver({"pinned.test": ["127.0.0.1"]}))
    assert checker.check(f"http://pinned.test:{target.port}{path}").outcome == Verdict.valid(200)
    [seen] = target.requests_to(path)
    assert seen.headers["Host"] == f"pinned.test:{target.port}" and seen.local_address == "127.0.0.1"


def test_https_verifies_the_original_name_while_connecting_to_the_checked_address(
        make_checker, secure_target, certificate):
    # The certificate is for secure.test only: connecting to 127.0.0.1 works because SNI and the
    # name check use the URL's host name, not the address.
    path = unique("/ok")
    resolver = fixed_resolver({"secure.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    trusting = make_checker(resolver=resolver, ca_certs=str(certificate[2]))
    assert trusting.check(f"https://secure.test:{secure_target.port}{path}").outcome == Verdict.valid(200)
    [seen] = secure_target.requests_to(path)
    assert seen.headers["Host"] == f"secure.test:{secure_target.port}"


def test_a_certificate_for_another_name_is_invalid_and_an_untrusted_one_inconclusive(
        make_checker, secure_target, certificate):
    resolver = fixed_resolver({"secure.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    trusting = make_checker(resolver=resolver, ca_certs=str(certificate[2]))
    wrong_name = trusting.check(f"https://other.test:{secure_target.port}/ok/z").outcome
    assert isinstance(wrong_name, Verdict) and wrong_name.status == "invalid"
    assert wrong_name.failure == TLS_NAME_MISMATCH and "other.test" in wrong_name.reason
    # An unknown issuer may be the checker's own trust store or an intercepting proxy: inconclusive.
    untrusted = make_checker(resolver=resolver).check(f"https://secure.test:{secure_target.port}/ok/z").outcome
    assert isinstance(untrusted, Inconclusive) and untrusted.failure == TLS
    assert "certificate verify failed" in untrusted.reason
