"""The link checker's rules, without any I/O: address policy, answers, retries, redirects, events."""
from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from delinkcious.contracts.events import derived_event_id
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.kit.core.urls import normalise_url
from delinkcious.link_checker.domain import (
    AddressPolicy,
    CheckPolicy,
    CheckRequest,
    Redirect,
    Reply,
    Transient,
    Verdict,
    parse_networks,
    parse_retry_after,
    redirect_target,
)
from delinkcious.link_checker.events import check_request_from

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
GUARD = AddressPolicy()


# --- address policy -----------------------------------------------------------------------------
@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd12:3456::1", "private"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
    ("100.64.0.1", "not a public"), ("fec0::1", "site-local"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"), ("169.254.170.2", "cloud metadata"),
    # IPv6 spellings of refused IPv4 addresses
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"), ("::ffff:169.254.169.254", "cloud metadata"),
    ("64:ff9b::a00:1", "private"), ("2002:a00:1::1", "private"), ("2002:7f00:1::", "loopback"),
])
def test_non_public_addresses_are_refused_with_what_they_are(address, kind):
    reason = GUARD.refusal(address)
    assert reason is not None and kind in reason, reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address):
    assert GUARD.refusal(address) is None


def test_allowing_private_addresses_allows_everything():
    policy = AddressPolicy(allow_private=True)
    assert all(policy.refusal(address) is None for address in ("127.0.0.1", "10.0.0.1", "169.254.169.254", "::1"))


def test_allowed_networks_are_exceptions_but_never_for_metadata():
    policy = AddressPolicy(allowed_networks=parse_networks("10.20.0.0/16, 169.254.0.0/16,127.0.0.1"))
    assert policy.refusal("10.20.3.4") is None
    assert policy.refusal("::ffff:10.20.3.4") is None
    assert policy.refusal("127.0.0.1") is None
    assert "private" in policy.refusal("10.21.0.1")
    assert "loopback" in policy.refusal("127.0.0.2")
    assert "cloud metadata" in policy.refusal("169.254.169.254")
    assert policy.refusal("169.254.1.1") is None


def test_parse_networks_names_the_bad_entry():
    assert parse_networks("") == ()
    assert parse_networks("10.0.0.0/8") == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(ValueError, match="'intranet'"):
        parse_networks("10.0.0.0/8,intranet")


def test_a_host_is_refused_if_any_of_its_addresses_is():
    reason = GUARD.refusal_of_any("mixed.example", ["93.184.216.34", "10.0.0.7"])
    assert reason == "mixed.example resolves to 10.0.0.7, a private address"
    assert GUARD.refusal_of_any("public.example", ["93.184.216.34", "2606:4700::1"]) is None
    assert GUARD.refusal_of_any("10.0.0.7", ["10.0.0.7"]) == "10.0.0.7 is a private address"


# --- judging answers ----------------------------------------------------------------------------
POLICY = CheckPolicy(max_attempts=3, max_redirects=5, backoff_initial_s=1, backoff_max_s=8, retry_after_max_s=30)


@pytest.mark.parametrize("status", [200, 201, 204, 206, 300, 304])
def test_success_and_final_3xx_are_valid(status):
    assert POLICY.judge(Reply(status), "http://a.example/", NOW) == Verdict.valid(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 451])
def test_4xx_except_429_is_invalid(status):
    assert POLICY.judge(Reply(status), "http://a.example/", NOW) == Verdict.invalid(f"HTTP {status}", status)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
def test_429_and_5xx_are_transient(status):
    judged = POLICY.judge(Reply(status, retry_after="7"), "http://a.example/", NOW)
    assert judged == Transient(f"HTTP {status}", status, 7.0)


def test_redirects_resolve_relative_locations_and_refuse_other_schemes():
    assert POLICY.judge(Reply(301, location="/b?x=1"), "http://a.example/a", NOW) == Redirect(
        "http://a.example/b?x=1", 301)
    assert POLICY.judge(Reply(308, location="https://b.example"), "http://a.example/", NOW) == Redirect(
        "https://b.example", 308)
    judged = POLICY.judge(Reply(302, location="file:///etc/passwd"), "http://a.example/", NOW)
    assert judged.status == "invalid" and "unsupported" in judged.reason
    assert redirect_target("http://a.example/", "gopher://x") is None
    assert redirect_target("http://a.example/", "http://[::1") is None


def test_head_refusals_fall_back_to_get():
    assert all(CheckPolicy.falls_back_to_get(Reply(status)) for status in (403, 405, 501))
    assert not any(CheckPolicy.falls_back_to_get(Reply(status)) for status in (200, 404, 500))


def test_back_off_doubles_is_capped_and_honours_retry_after_up_to_its_cap():
    plain = Transient("HTTP 503", 503)
    assert [POLICY.retry_delay(attempt, plain) for attempt in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 8]
    assert POLICY.retry_delay(1, Transient("HTTP 429", 429, retry_after_s=5)) == 5
    assert POLICY.retry_delay(3, Transient("HTTP 429", 429, retry_after_s=2)) == 4
    assert POLICY.retry_delay(1, Transient("HTTP 429", 429, retry_after_s=3600)) == 30


def test_giving_up_is_invalid_with_the_last_reason():
    verdict = POLICY.give_up(Transient("HTTP 503", 503), 3)
    assert verdict == Verdict("invalid", 503, "HTTP 503 (after 3 attempts)")
    assert verdict.result == "invalid"
    assert Verdict.invalid("refused: x", refused=True).result == "refused"


def test_retry_after_as_seconds_or_http_date():
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90.0
    assert parse_retry_after(format_datetime(NOW - timedelta(seconds=90), usegmt=True), NOW) == 0.0
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-3", NOW) is None


# --- what to check ------------------------------------------------------------------------------
def test_check_request_from_a_link_event():
    data = {"username": "alice", "url": "https://a.example/x", "title": "t", "link_created_at": "2026-01-02T03:04:05.000001Z"}
    request = check_request_from(data, author="alice")
    assert request == CheckRequest("alice", "https://a.example/x", "2026-01-02T03:04:05.000001Z")
    assert check_request_from({"url": "http://b.example"}, author="bob").username == "bob"


@pytest.mark.parametrize("data, field", [
    ({"username": "Not Valid", "url": "http://a.example"}, "username"),
    ({"username": "alice", "url": "ftp://a.example"}, "url"),
    ({"username": "alice", "url": "http://"}, "url"),
    ({"username": "alice", "url": "http://a.example:99999/"}, "url"),
    ({"username": "alice"}, "url"),
    ({"username": "alice", "url": "http://a.example", "link_created_at": "yesterday"}, "link_created_at"),
])
def test_events_that_can_never_be_checked_are_invalid_input(data, field):
    with pytest.raises(InvalidInput) as raised:
        check_request_from(data, author="alice")
    assert raised.value.field == field


def test_the_cache_key_is_the_link_services_identity_rule():
    assert normalise_url("HTTP://Example.COM:80/Path/") == normalise_url("http://example.com/Path")
    assert normalise_url("http://example.com/Path") != normalise_url("http://example.com/path")


def test_derived_event_ids_are_stable_per_input_and_producer():
    assert derived_event_id("e1", "link-checker") == derived_event_id("e1", "link-checker")
    assert derived_event_id("e1", "link-checker") != derived_event_id("e2", "link-checker")
    assert derived_event_id("e1", "link-checker") != derived_event_id("e1", "news")
