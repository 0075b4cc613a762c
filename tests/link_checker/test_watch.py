"""The NetworkWatch's states, driven by hand (a clock of the test's own, probes answering as told): an outage
of the checker's own network is suspected from the recent checks, confirmed or disproved by probes, paused
through, and ended by a probe or a check that is answered."""
from __future__ import annotations

from typing import Any

from delinkcious.link_checker.domain import (
    HOST_NOT_FOUND,
    HTTP_5XX,
    TIMEOUT,
    Inconclusive,
    OutageRule,
    Outcome,
    Verdict,
)
from delinkcious.link_checker.service import NetworkStatus, NetworkWatch

RULE = OutageRule(window_s=60, min_checks=4, threshold=0.75, min_hosts=2)
TIMED_OUT = Inconclusive("timed out: no answer within 10 s", TIMEOUT)
OK = Verdict.valid(200)


class Harness:
    def __init__(self, canaries: tuple[str, ...] = ()) -> None:
        self.now = 1000.0
        self.answers: dict[str, Outcome | None] = {}  # what a probe of a URL gets (None: no outcome)
        self.probed: list[str] = []
        self.reports: list[tuple[str, NetworkStatus, dict[str, Any]]] = []
        self.watch = NetworkWatch(RULE, self.probe, canaries=canaries, probe_interval_s=30, probe_timeout_s=1,
                                  report=lambda *report: self.reports.append(report), monotonic=lambda: self.now)

    def probe(self, url: str) -> Outcome | None:
        self.probed.append(url)
        return self.answers.get(url, TIMED_OUT)

    def checks(self, outcome: Outcome, *urls: str) -> None:
        for url in urls:
            self.watch.record(url, outcome)
            self.now += 1

    @property
    def events(self) -> list[str]:
        return [event for event, _status, _details in self.reports]


FAILING = ("http://a.example/1", "http://b.example/2", "http://c.example/3", "http://d.example/4")


def test_a_suspicion_probes_the_hosts_that_answered_and_their_answer_disproves_it():
    harness = Harness()
    harness.checks(OK, "http://good.example/x")
    harness.checks(TIMED_OUT, *FAILING)
    harness.answers["http://good.example/x"] = OK
    harness.watch.tick()
    assert harness.events == ["checker_outage_suspected", "checker_outage_disproved"]
    assert harness.probed == ["http://good.example/x"]
    assert harness.watch.status().state == "healthy" and not harness.watch.paused
    # The same failures again right after: no new suspicion before the probe interval.
    harness.checks(TIMED_OUT, *FAILING)
    harness.watch.tick()
    assert harness.events == ["checker_outage_suspected", "checker_outage_disproved"]


def test_probes_that_fail_too_declare_the_outage_and_a_later_answer_ends_it():
    harness = Harness()
    harness.checks(OK, "http://good.example/x")
    harness.checks(TIMED_OUT, *FAILING)
    harness.watch.tick()
    status = harness.watch.status()
    assert harness.events == ["checker_outage_suspected", "checker_outage_began"]
    assert (status.state, status.failure, status.paused) == ("outage", TIMEOUT, True)
    assert harness.reports[-1][2]["probed"] == ["good.example"]  # host names only, never a user's URL
    # A conclusive verdict reached without an HTTP answer is not believed now.
    assert harness.watch.doubts(Verdict.invalid("host not found: x.example", failure=HOST_NOT_FOUND))
    assert not harness.watch.doubts(Verdict.invalid("HTTP 404", 404))

    harness.now += 10
    harness.watch.tick()  # not due yet
    assert harness.events[-1] == "checker_outage_began"
    harness.now += 25
    harness.watch.tick()  # due: the trusted host and the last failing ones, all still silent
    assert harness.events[-1] == "checker_outage_probed" and harness.watch.paused
    assert set(harness.probed[1:]) == {"http://good.example/x", *FAILING[1:]}

    harness.answers["http://c.example/3"] = Verdict.invalid("HTTP 404", 404)  # any conclusive answer will do
    harness.now += 31
    harness.watch.tick()
    assert harness.events[-1] == "checker_outage_ended"
    assert harness.reports[-1][2]["ended_by"] == "a probe was answered" and harness.reports[-1][2]["outage_s"] > 60
    assert harness.watch.status().state == "healthy" and not harness.watch.paused


def test_canaries_are_probed_first_and_confirm_an_outage_without_any_answered_host():
    harness = Harness(canaries=("http://canary.example/",))
    harness.checks(TIMED_OUT, *FAILING)
    harness.watch.tick()
    assert harness.probed == ["http://canary.example/"]
    assert harness.events == ["checker_outage_suspected", "checker_outage_began"]


def test_with_nothing_trusted_to_probe_an_unanswered_outage_is_declared_and_tried_with_checks():
    harness = Harness()
    harness.checks(TIMED_OUT, *FAILING)
    harness.watch.tick()
    assert harness.events == ["checker_outage_began"] and harness.probed == [] and harness.watch.paused
    harness.now += 31
    harness.watch.tick()  # the failing targets are probed and still silent: let checks through as a trial
    assert harness.events[-1] == "checker_outage_trial"
    status = harness.watch.status()
    assert (status.state, status.trial, status.paused) == ("outage", True, False)
    harness.checks(TIMED_OUT, *FAILING)  # the trial fails the same way: paused again
    harness.watch.tick()
    assert harness.events[-1] == "checker_outage_trial_failed" and harness.watch.paused
    harness.now += 31
    harness.watch.tick()
    assert harness.events[-1] == "checker_outage_trial"
    harness.checks(OK, "http://e.example/5")  # a check answered during the trial ends the outage
    assert harness.events[-1] == "checker_outage_ended" and harness.watch.status().state == "healthy"


def test_a_suspicion_that_is_not_a_network_failure_is_never_declared_without_a_probe():
    harness = Harness()
    missing = Verdict.invalid("host not found", failure=HOST_NOT_FOUND)
    harness.checks(missing, *FAILING)
    harness.watch.tick()
    assert harness.events == ["checker_outage_unconfirmed"] and not harness.watch.paused
    harness.checks(Inconclusive("HTTP 503", HTTP_5XX, 503), *FAILING)
    harness.watch.tick()  # within the quiet period
    assert harness.events == ["checker_outage_unconfirmed"]


def test_refused_addresses_say_nothing_about_the_network():
    harness = Harness()
    harness.checks(Verdict.invalid("refused: 10.0.0.1 is a private address", refused=True), *FAILING)
    assert harness.watch.status().checks == 0


def test_an_answer_to_a_check_still_in_flight_ends_an_outage():
    harness = Harness()
    harness.checks(TIMED_OUT, *FAILING)
    harness.watch.tick()
    assert harness.watch.status().state == "outage"
    harness.checks(Verdict.invalid("HTTP 410", 410), "http://late.example/x")
    assert harness.events[-1] == "checker_outage_ended" and not harness.watch.paused
    assert harness.reports[-1][2]["ended_by"] == "a check of late.example was answered"
