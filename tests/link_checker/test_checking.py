"""Checking URLs for real: the real fetcher against local web servers (attempts are counted on the
server side), with the request forgery guard off except where a test is about the guard."""
from __future__ import annotations

import ipaddress
import time
import uuid

from delinkcious.link_checker.domain import Verdict

from tests.link_checker.conftest import USER_AGENT, fixed_resolver


def unique(path: str) -> str:
    return f"{path}/{uuid.uuid4().hex[:10]}"


def test_200_is_valid_with_one_head_request_identifying_the_checker(make_checker, target):
    path = unique("/ok")
    report = make_checker().check(target.url(path))
    assert report.verdict == Verdict.valid(200) and report.attempts == 1
    [seen] = target.requests_to(path)
    assert seen.method == "HEAD"
    assert seen.headers["User-Agent"] == USER_AGENT
    assert seen.headers["Host"] == f"127.0.0.1:{target.port}"


def test_404_is_invalid_at_once(make_checker, target):
    path = unique("/missing")
    report = make_checker().check(target.url(path))
    assert report.verdict == Verdict.invalid("HTTP 404", 404)
    assert len(target.requests_to(path)) == 1


def test_head_refused_falls_back_to_get(make_checker, target):
    path = unique("/no-head")
    assert make_checker().check(target.url(path)).verdict == Verdict.valid(200)
    assert [seen.method for seen in target.requests_to(path)] == ["HEAD", "GET"]


def test_a_redirect_chain_is_followed_to_its_end(make_checker, target):
    suffix = uuid.uuid4().hex[:10]
    report = make_checker().check(target.url(f"/chain/3/{suffix}"))
    assert report.verdict == Verdict.valid(200) and report.requests == 4
    assert [len(target.requests_to(f"/chain/{hop}/{suffix}")) for hop in (3, 2, 1, 0)] == [1, 1, 1, 1]


def test_five_redirects_are_followed_and_a_sixth_is_too_many(make_checker, target):
    assert make_checker().check(target.url(unique("/chain/5"))).verdict == Verdict.valid(200)
    suffix = uuid.uuid4().hex[:10]
    report = make_checker().check(target.url(f"/chain/6/{suffix}"))
    assert report.verdict == Verdict.invalid("more than 5 redirects", 302)
    assert target.requests_to(f"/chain/0/{suffix}") == []  # the sixth redirect is not followed


def test_a_slow_server_is_invalid_only_after_every_attempt_timed_out(make_checker, target):
    path = unique("/slow")
    started = time.monotonic()
    report = make_checker(max_attempts=3, attempt_timeout_s=0.3).check(target.url(path))
    assert report.verdict.status == "invalid" and report.verdict.http_status is None
    assert report.verdict.reason == "timed out: no answer within 0.3 s (after 3 attempts)"
    assert len(target.requests_to(path)) == 3
    assert time.monotonic() - started < 2.0  # 3 x 0.3 s plus back-off, not 3 x the server's 1 s


def test_the_deadline_covers_the_whole_answer_not_each_read(make_checker, target):
    started = time.monotonic()
    report = make_checker(max_attempts=1, attempt_timeout_s=0.5).check(target.url(unique("/drip")))
    assert report.verdict.reason == "timed out: no answer within 0.5 s (after 1 attempt)"
    assert time.monotonic() - started < 1.5  # the server would take 3.5 s, 0.1 s per byte


def test_503_then_200_is_valid_after_a_retry(make_checker, target):
    path = unique("/flaky/1")
    report = make_checker().check(target.url(path))
    assert report.verdict == Verdict.valid(200) and report.attempts == 2
    assert len(target.requests_to(path)) == 2


def test_persistent_503_is_invalid_after_the_attempts(make_checker, target):
    path = unique("/always-503")
    report = make_checker(max_attempts=3).check(target.url(path))
    assert report.verdict == Verdict.invalid("HTTP 503 (after 3 attempts)", 503)
    assert len(target.requests_to(path)) == 3


def test_429_waits_for_retry_after_then_is_valid(make_checker, target):
    path = unique("/limited")
    report = make_checker(backoff_s=0.01).check(target.url(path))
    assert report.verdict == Verdict.valid(200) and report.attempts == 2
    first, second = target.requests_to(path)
    assert second.at - first.at >= 0.95  # Retry-After: 1, although the back-off is 10 ms


def test_unreachable_and_unknown_hosts_are_invalid(make_checker, target):
    refused = make_checker(max_attempts=2).check("http://127.0.0.1:1/")
    assert refused.verdict.reason == "could not connect to 127.0.0.1: connection refused (after 2 attempts)"
    unknown = make_checker().check("http://no-such-host.invalid/")
    assert unknown.verdict == Verdict.invalid("host not found: no-such-host.invalid") and unknown.attempts == 1


# --- the request forgery guard -------------------------------------------------------------------
def test_guard_refuses_a_private_first_hop_without_connecting(make_checker, target):
    path = unique("/ok")
    report = make_checker(allow_private=False).check(target.url(path))
    assert report.verdict == Verdict.invalid("refused: 127.0.0.1 is a loopback address", refused=True)
    assert report.attempts == 1 and target.requests_to(path) == []
    named = make_checker(allow_private=False, resolver=fixed_resolver({"intranet.test": ["10.1.2.3"]}))
    assert named.check("http://intranet.test/").verdict.reason == (
        "refused: intranet.test resolves to 10.1.2.3, a private address")
    metadata = make_checker(allow_private=False).check("http://169.254.169.254/latest/meta-data/")
    assert metadata.verdict.reason == "refused: 169.254.169.254 is a cloud metadata address"


def test_guard_checks_every_redirect_hop(make_checker, target):
    # The first hop is allowed (127.0.0.1 is an allowed network here); its redirects are checked
    # again: to a name resolving to a private address, and to another loopback address.
    checker = make_checker(allow_private=False, allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),),
                           resolver=fixed_resolver({"internal.test": ["10.9.8.7"]}))
    to_named = target.url(f"/to?url=http://internal.test:{target.port}/ok/x")
    assert checker.check(to_named).verdict == Verdict.invalid(
        "refused: internal.test resolves to 10.9.8.7, a private address", refused=True)
    to_loopback = target.url(f"/to?url=http://127.0.0.2:{target.port}/ok/y")
    assert checker.check(to_loopback).verdict.reason == "refused: 127.0.0.2 is a loopback address"
    to_metadata = target.url("/to?url=http://169.254.169.254/latest/meta-data/")
    assert checker.check(to_metadata).verdict.reason == "refused: 169.254.169.254 is a cloud metadata address"
    assert target.requests_to("/ok/x") == [] and target.requests_to("/ok/y") == []


def test_connection_goes_to_the_checked_address_with_the_original_host_name(make_checker, target):
    # The name resolves (once) to 127.0.0.1; the request reaches it with the name in Host.
    path = unique("/ok")
    checker = make_checker(resolver=fixed_resolver({"pinned.test": ["127.0.0.1"]}))
    assert checker.check(f"http://pinned.test:{target.port}{path}").verdict == Verdict.valid(200)
    [seen] = target.requests_to(path)
    assert seen.headers["Host"] == f"pinned.test:{target.port}" and seen.local_address == "127.0.0.1"


def test_https_verifies_the_original_name_while_connecting_to_the_checked_address(
        make_checker, secure_target, certificate):
    # The certificate is for secure.test only: connecting to 127.0.0.1 works because SNI and the
    # name check use the URL's host name, not the address.
    path = unique("/ok")
    resolver = fixed_resolver({"secure.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    trusting = make_checker(resolver=resolver, ca_certs=str(certificate[2]))
    assert trusting.check(f"https://secure.test:{secure_target.port}{path}").verdict == Verdict.valid(200)
    [seen] = secure_target.requests_to(path)
    assert seen.headers["Host"] == f"secure.test:{secure_target.port}"

    wrong_name = trusting.check(f"https://other.test:{secure_target.port}/ok/z").verdict
    assert wrong_name.status == "invalid" and wrong_name.reason.startswith("TLS error")
    untrusted = make_checker(resolver=resolver).check(f"https://secure.test:{secure_target.port}/ok/z").verdict
    assert untrusted.status == "invalid" and "certificate verify failed" in untrusted.reason
