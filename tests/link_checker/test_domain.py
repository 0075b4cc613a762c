"""The link checker's rules, without any I/O: address policy, the table of answers (conclusive or
inconclusive), retries with back-off and jitter, own-outage detection, redirects, events."""
from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from delinkcious.contracts.events import derived_event_id
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.kit.core.urls import normalise_url
from delinkcious.link_checker.domain import (
    CONNECTION,
    DNS,
    HOST_NOT_FOUND,
    HTTP_4XX,
    HTTP_5XX,
    HTTP_429,
    HTTP_OTHER,
    TIMEOUT,
    UNREACHABLE,
    AddressPolicy,
    CheckPolicy,
    CheckRequest,
    Inconclusive,
    Observation,
    OutageRule,
    Redirect,
    Reply,
    RetryPolicy,
    Verdict,
    answered,
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


# --- judging answers: conclusive or inconclusive ------------------------------------------------
POLICY = CheckPolicy(max_redirects=5)


@pytest.mark.parametrize("status, expected", [
    # Conclusive: the link works...
    (200, Verdict.valid(200)), (201, Verdict.valid(201)), (204, Verdict.valid(204)), (206, Verdict.valid(206)),
    (300, Verdict.valid(300)), (304, Verdict.valid(304)),
    (301, Verdict.valid(301)),  # a redirect without a Location is an answer, not a hop
    # ... or the resource is gone, whoever asks.
    (404, Verdict.invalid("HTTP 404", 404)), (410, Verdict.invalid("HTTP 410", 410)),
    # Inconclusive: the server is busy or failing, or refuses the checker rather than the link.
    (429, Inconclusive("HTTP 429", HTTP_429, 429)),
    (500, Inconclusive("HTTP 500", HTTP_5XX, 500)), (502, Inconclusive("HTTP 502", HTTP_5XX, 502)),
    (503, Inconclusive("HTTP 503", HTTP_5XX, 503)), (504, Inconclusive("HTTP 504", HTTP_5XX, 504)),
    (599, Inconclusive("HTTP 599", HTTP_5XX, 599)),
    (400, Inconclusive("HTTP 400", HTTP_4XX, 400)), (401, Inconclusive("HTTP 401", HTTP_4XX, 401)),
    (403, Inconclusive("HTTP 403", HTTP_4XX, 403)), (405, Inconclusive("HTTP 405", HTTP_4XX, 405)),
    (407, Inconclusive("HTTP 407", HTTP_4XX, 407)), (408, Inconclusive("HTTP 408", HTTP_4XX, 408)),
    (451, Inconclusive("HTTP 451", HTTP_4XX, 451)),
    (199, Inconclusive("unexpected HTTP status 199", HTTP_OTHER, 199)),
    (600, Inconclusive("unexpected HTTP status 600", HTTP_OTHER, 600)),
])
def test_the_table_of_answers(status, expected):
    assert POLICY.judge(Reply(status), "http://a.example/", NOW) == expected


def test_only_an_answer_from_the_server_proves_the_network_works():
    assert answered(Verdict.valid(200)) and answered(Verdict.invalid("HTTP 404", 404))
    assert not answered(Inconclusive("HTTP 503", HTTP_5XX, 503))
    assert not answered(Verdict.invalid("host not found: x.example", failure=HOST_NOT_FOUND))
    assert not answered(Verdict.invalid("refused: 10.0.0.1 is a private address", refused=True))


def test_retry_after_is_kept_with_an_inconclusive_answer():
    judged = POLICY.judge(Reply(503, retry_after="7"), "http://a.example/", NOW)
    assert judged == Inconclusive("HTTP 503", HTTP_5XX, 503, 7.0)
    assert POLICY.judge(Reply(429, retry_after="soon"), "http://a.example/", NOW).retry_after_s is None


def test_redirects_resolve_relative_locations_and_refuse_other_schemes():
    assert POLICY.judge(Reply(301, location="/b?x=1"), "http://a.example/a", NOW) == Redirect(
        "http://a.example/b?x=1", 301)
    assert POLICY.judge(Reply(308, location="https://b.example"), "http://a.example/", NOW) == Redirect(
        "https://b.example", 308)
    judged = POLICY.judge(Reply(302, location="file:///etc/passwd"), "http://a.example/", NOW)
    assert judged.status == "invalid" and "unsupported" in judged.reason
    assert redirect_target("http://a.example/", "gopher://x") is None
    assert redirect_target("http://a.example/", "http://[::1") is None
    assert POLICY.too_many_redirects(302) == Inconclusive("more than 5 redirects", "redirects", 302)


def test_head_refusals_fall_back_to_get():
    assert all(CheckPolicy.falls_back_to_get(Reply(status)) for status in (403, 405, 501))
    assert not any(CheckPolicy.falls_back_to_get(Reply(status)) for status in (200, 404, 500))


# --- trying inconclusive checks again -----------------------------------------------------------
RETRIES = RetryPolicy(max_attempts=6, backoff_initial_s=10, backoff_max_s=80, retry_after_max_s=300, max_age_s=1000,
                      jitter=0.5)
BUSY = Inconclusive("HTTP 503", HTTP_5XX, 503)


def test_back_off_doubles_up_to_its_cap_with_jitter_of_up_to_half():
    assert [RETRIES.decide(attempt, 0, BUSY, 0.0).delay_s for attempt in (1, 2, 3, 4, 5)] == [10, 20, 40, 80, 80]
    assert [RETRIES.decide(attempt, 0, BUSY, 0.999999).delay_s for attempt in (1, 2, 3)] == pytest.approx([5, 10, 20], rel=1e-4)
    assert RETRIES.decide(2, 0, BUSY, 0.5).delay_s == 15
    assert RETRIES.shortest_delay_s == 5


def test_a_longer_retry_after_is_honoured_up_to_its_cap():
    assert RETRIES.decide(1, 0, Inconclusive("HTTP 429", HTTP_429, 429, 120.0), 0.0).delay_s == 120
    assert RETRIES.decide(3, 0, Inconclusive("HTTP 429", HTTP_429, 429, 2.0), 0.0).delay_s == 40
    assert RETRIES.decide(1, 0, Inconclusive("HTTP 503", HTTP_5XX, 503, 3600.0), 0.0).delay_s == 300


def test_a_check_is_given_up_after_its_attempts_or_its_age():
    assert RETRIES.decide(5, 0, BUSY, 0.0).delay_s == 80
    last = RETRIES.decide(6, 0, BUSY, 0.0)
    assert last.delay_s is None and last.why == "6 attempts, all inconclusive"
    old = RETRIES.decide(3, 980, BUSY, 0.0)  # the next attempt (in 40 s) would pass the 1000 s
    assert old.delay_s is None and "980 s" in old.why
    assert RETRIES.decide(3, 950, BUSY, 0.0).delay_s == 40


# --- the checker's own outage --------------------------------------------------------------------
RULE = OutageRule(window_s=60, min_checks=10, threshold=0.8, min_hosts=3)


def seen(at: float, host: str, failure: str | None) -> Observation:
    return Observation(at, host, failure)


def test_most_checks_failing_the_same_way_on_several_hosts_is_suspected():
    observations = [seen(i, f"h{i % 4}.example", TIMEOUT) for i in range(8)] + [
        seen(8, "ok.example", None), seen(9, "ok2.example", None)]
    suspicion = RULE.suspicion(observations, now=10)
    assert (suspicion.failure, suspicion.checks, suspicion.failing, suspicion.hosts) == (TIMEOUT, 10, 8, 4)


def test_too_few_checks_too_few_failures_or_one_host_is_no_suspicion():
    assert RULE.suspicion([seen(i, f"h{i}.example", TIMEOUT) for i in range(9)], now=10) is None
    assert RULE.suspicion([seen(i, f"h{i}.example", TIMEOUT if i < 7 else None) for i in range(10)], now=10) is None
    # One dead site with many links is not the checker's outage.
    assert RULE.suspicion([seen(i, "dead.example" if i < 9 else "h.example", TIMEOUT) for i in range(10)], 10) is None


def test_only_the_window_counts():
    old = [seen(i, f"h{i}.example", TIMEOUT) for i in range(10)]
    assert RULE.suspicion(old, now=69) is None  # all older than 60 s
    assert RULE.suspicion(old, now=60).failure == TIMEOUT


def test_a_mix_of_unanswered_failures_is_an_unreachable_network():
    kinds = [TIMEOUT, DNS, CONNECTION, TIMEOUT, DNS, CONNECTION, TIMEOUT, DNS, CONNECTION, None]
    suspicion = RULE.suspicion([seen(i, f"h{i}.example", kind) for i, kind in enumerate(kinds)], now=10)
    assert suspicion.failure == UNREACHABLE and suspicion.failing == 9
    assert RULE.declared_without_probe(UNREACHABLE) and RULE.declared_without_probe(TIMEOUT)


def test_answers_that_are_not_network_failures_are_suspected_only_alone_and_need_a_probe():
    # 5xx from everywhere (an intercepting proxy?) is suspected, but never declared without a probe.
    fives = RULE.suspicion([seen(i, f"h{i}.example", HTTP_5XX) for i in range(10)], now=10)
    assert fives.failure == HTTP_5XX and not RULE.declared_without_probe(HTTP_5XX)
    missing = RULE.suspicion([seen(i, f"h{i}.example", HOST_NOT_FOUND) for i in range(10)], now=10)
    assert missing.failure == HOST_NOT_FOUND and not RULE.declared_without_probe(HOST_NOT_FOUND)
    # They do not mix with unanswered failures.
    mixed = [seen(i, f"h{i}.example", HTTP_5XX if i % 2 else TIMEOUT) for i in range(10)]
    assert RULE.suspicion(mixed, now=10) is None


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
