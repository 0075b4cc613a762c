"""The implementation matches its OpenAPI document, both ways: schemathesis generates requests from
/v1/openapi.json, schema-valid ones and schema-violating ones, for every operation, and each answer is checked with
schemathesis' own checks:

- `not_a_server_error`: never a 5xx;
- `status_code_conformance`, `content_type_conformance`, `response_schema_conformance`: the answer's status is
  one the document lists for the operation, and its body is what the document says for that status;
- `negative_data_rejection`: a request the document forbids is refused (4xx), never accepted;
- `positive_data_acceptance`: a request the document allows is not refused as invalid (400/422).

A valid request may still get the 400s the document describes in words, because JSON Schema cannot say them (as in
tests/api_gateway/test_openapi_agreement.py, which runs the same checks in-process): a page token the service did
not issue to this caller for this listing, a regular expression PostgreSQL refuses (or the link service refuses as
too costly), a link sent as query parameters without its url or title (required only when there is no body), and
following oneself.

Then a stateful run: schemathesis' state machine chains operations through OpenAPI links (add a link, then change
and remove it by the URL the answer carries; walk a listing by its `next_token`). The document has no links of its
own (its operations identify a link by a URL in the query or body, not by a path parameter, so schemathesis infers
none), so the test adds them to its copy of the document, below (LINKS); they say only what DESIGN §2 promises.

Bounded and deterministic: a fixed number of derandomised examples per operation and mode, a fixed number of
stateful scenarios and steps, each request with a timeout. /logout is left out (it would revoke the suite's own
token), and so are the two login steps (they hand over to the identity provider)."""
from __future__ import annotations

import copy
import re
from typing import Any

import requests
from delinkcious_client import Settings, User, assert_ok, new_session
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

SKIPPED_PATHS = ("/logout", "/login", "/login/authorized")
EXAMPLES_PER_OPERATION_AND_MODE = 20
STATEFUL_SCENARIOS = 15
STATEFUL_STEPS = 8
# schemathesis is imported by the tests that use it, not when the suite is collected: the suite's image leaves it
# out (integration-test/Dockerfile).
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
          "negative_data_rejection", "positive_data_acceptance")
# The server's refusals of a request line, header or body too large to read, before any parsing.
SIZE_REFUSALS = (413, 414, 431)
REGEX_FILTERS = ("url_regex", "title_regex", "description_regex")
# The link service's refusals of an expression (PostgreSQL's own, and those of its static look at the cost).
EXPRESSION_REFUSALS = re.compile(r"invalid regular expression|filter too costly|back references|lookahead "
                                 r"constraints|counted repetition|parentheses may be nested|only advanced")

# OpenAPI links for the stateful run: (source path, method, status) -> {name: link}.
LINKS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("/v1/links", "post", "201"): {
        "ChangeTheLink": {"operationRef": "#/paths/~1v1~1links/put",
                          "requestBody": {"url": "$response.body#/url"}},
        "RemoveTheLink": {"operationRef": "#/paths/~1v1~1links/delete",
                          "parameters": {"url": "$response.body#/url"}},
    },
    ("/v1/links", "put", "200"): {
        "RemoveTheChangedLink": {"operationRef": "#/paths/~1v1~1links/delete",
                                 "parameters": {"url": "$response.body#/url"}},
    },
    ("/v1/links", "delete", "200"): {
        "ChangeTheRemovedLink": {"operationRef": "#/paths/~1v1~1links/put",
                                 "requestBody": {"url": "$response.body#/url"}},
    },
    ("/v1/links", "get", "200"): {
        "NextPageOfLinks": {"operationRef": "#/paths/~1v1~1links/get",
                            "parameters": {"start_token": "$response.body#/next_token"}},
    },
    ("/v1/news", "get", "200"): {
        "NextPageOfNews": {"operationRef": "#/paths/~1v1~1news/get",
                           "parameters": {"start_token": "$response.body#/next_token"}},
    },
    ("/v1/following", "get", "200"): {
        "Unfollow": {"operationRef": "#/paths/~1v1~1following/delete",
                     "parameters": {"followed": "$response.body#/following/0"}},
    },
}


def refused_for_what_the_schema_cannot_say(case: Any, response: Any, caller: User) -> bool:
    """A schema-valid request's 400 that the document describes in words only (see the module's docstring)."""
    if response.status_code != 400:
        return False
    body = response.json()
    field, message = body.get("field"), body.get("message", "")
    if field == "start_token":
        return True
    if field in REGEX_FILTERS:
        return bool(EXPRESSION_REFUSALS.search(message))
    if field == "followed":
        return isinstance(case.body, dict) and case.body.get("followed") == caller.username
    no_body = case.method == "POST" and not isinstance(case.body, (dict, list, str))
    return no_body and field in ("url", "title") and message.endswith("is required")


def disagreement(case: Any, response: Any, caller: User) -> str | None:
    """What is wrong with the answer to `case`, by schemathesis' checks; None if nothing is."""
    positive = case.meta.generation.mode.is_positive  # a negative strategy may yield a valid case
    if positive and refused_for_what_the_schema_cannot_say(case, response, caller):
        return None
    if not positive and response.status_code in SIZE_REFUSALS:
        return None  # refused, as it should be, by the server before any parsing
    from schemathesis import checks
    from schemathesis.core.failures import Failure, FailureGroup
    from schemathesis.specs.openapi import checks as openapi_checks

    try:
        case.validate_response(response, checks=[getattr(checks, name, None) or getattr(openapi_checks, name)
                                                 for name in CHECKS])
    except (Failure, FailureGroup) as failure:
        return (f"{case.meta.generation.mode.value} {case.method} {case.formatted_path} -> {response.status_code} "
                f"{response.text[:300]}: {str(failure).splitlines()[0][:200]}; "
                f"query={str(case.query)[:300]} body={str(case.body)[:300]}")
    return None


def test_every_operation_agrees_with_the_document_both_ways(openapi_schema, conformance_user: User) -> None:
    from schemathesis import GenerationMode

    disagreements: list[str] = []
    checked = 0
    for result in openapi_schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIPPED_PATHS:
            continue
        checked += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(max_examples=EXAMPLES_PER_OPERATION_AND_MODE, deadline=None, derandomize=True,
                                 database=None, suppress_health_check=list(HealthCheck))
            def call(case) -> None:
                response = case.call(headers=conformance_user.bearer, timeout=30)
                if (problem := disagreement(case, response, conformance_user)) is not None:
                    disagreements.append(problem)

            call()
    assert checked >= 10
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n\n".join(disagreements[:15])


def with_links(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of `document` with LINKS added to its responses."""
    linked = copy.deepcopy(document)
    for (path, method, status), links in LINKS.items():
        response = linked["paths"][path][method]["responses"][status]
        response["links"] = {**response.get("links", {}), **links}
    return linked


def test_chained_operations_agree_with_the_document(settings: Settings, conformance_user: User) -> None:
    import schemathesis

    document = requests.get(f"{settings.base_url}/v1/openapi.json", timeout=settings.request_timeout).json()
    schema = schemathesis.openapi.from_dict(with_links(document)).exclude(path=list(SKIPPED_PATHS))
    schema.config.update(base_url=settings.base_url)
    disagreements: list[str] = []
    steps: list[str] = []
    followed: set[str] = set()  # the links the scenarios followed, with the values the answers gave them

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Every scenario starts from the same state (no links, no follows), so the same generated requests get
            # the same answers and Hypothesis' replays of a scenario are faithful.
            forget_everything(settings, conformance_user)

        def step(self, input: Any) -> Any:
            if input.transition is not None and input.is_applied:
                # Its id reads "POST /v1/links -> [201] ChangeTheLink -> PUT /v1/links".
                followed.add(input.transition.id.split("] ", 1)[-1].split(" ", 1)[0])
            return super().step(input)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": conformance_user.bearer, "timeout": 30}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            steps.append(f"{case.method} {case.path}")
            if (problem := disagreement(case, response, conformance_user)) is not None:
                disagreements.append(problem)

    assert schema.statistic.transitions.total >= len([link for links in LINKS.values() for link in links])
    Machine.run(settings=settings_for_the_machine())
    assert len(steps) >= STATEFUL_SCENARIOS, steps
    # Which of the links Hypothesis follows depends on the answers it gets (timing, earlier scenarios): two at
    # least shows that the scenarios chain operations and do not only call each one alone.
    assert len(followed) >= 2, (followed, steps)
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n\n".join(disagreements[:15])


def forget_everything(settings: Settings, user: User) -> None:
    """Removes every link and follow of `user`."""
    with new_session(settings) as session:
        for _ in range(100):
            links = assert_ok(session.get("/v1/links", params={"limit": 100}, headers=user.bearer))["links"]
            following = assert_ok(session.get("/v1/following", params={"limit": 100},
                                              headers=user.bearer))["following"]
            if not links and not following:
                return
            for link in links:
                assert_ok(session.delete("/v1/links", params={"url": link["url"]}, headers=user.bearer), 200, 204)
            for followed in following:
                assert_ok(session.delete("/v1/following", params={"followed": followed}, headers=user.bearer))
        raise AssertionError(f"{user.username} still has links or follows")


def settings_for_the_machine() -> hypothesis_settings:
    return hypothesis_settings(max_examples=STATEFUL_SCENARIOS, stateful_step_count=STATEFUL_STEPS, deadline=None,
                               derandomize=True, database=None, suppress_health_check=list(HealthCheck))
