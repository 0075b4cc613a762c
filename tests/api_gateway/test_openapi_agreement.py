"""The OpenAPI document and the validation agree: schemathesis generates requests from the gateway's own
/v1/openapi.json, schema-valid and schema-violating ones, for every /v1/links operation, and sends them through the
gateway to the real link service. Every valid request is accepted (2xx, or the 404/409 the document lists for it),
every invalid one is refused with a 4xx, and nothing is a 5xx. Bounded: a fixed number of derandomised examples per
operation and mode.

A valid request may still get the 400s the document describes in words because JSON Schema cannot say them: a page
token the service did not issue to this caller for this listing, a regular expression that is not one (or that the
link service refuses as too costly), and a link sent as query parameters without its url or title (required only
when there is no body)."""
from __future__ import annotations

import re
import sys
import unicodedata
from typing import Any

import pytest
import schemathesis
from delinkcious.contracts import public_api
from delinkcious.kit.core import pages
from delinkcious.link import domain
from hypothesis import HealthCheck, given, settings, strategies
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.api_gateway.link_chain import link_chain  # noqa: F401 - the fixture

EXAMPLES = 60
# The server's refusals of a request line or header field too long to read (gunicorn's limits, in JSON).
SIZE_REFUSALS = (413, 414, 431)
REGEX_FILTERS = ("url_regex", "title_regex", "description_regex")
# The link service's refusals of an expression (PostgreSQL's own, and those of link/domain.py's PatternCost).
EXPRESSION_REFUSALS = re.compile(r"invalid regular expression|filter too costly|back references|lookahead "
                                 r"constraints|counted repetition|parentheses may be nested|only advanced")


def refused_for_what_the_schema_cannot_say(case: Any, response: Any) -> bool:
    if response.status_code != 400:
        return False
    body = response.json()
    field, message = body.get("field"), body.get("message", "")
    if field == "start_token":
        return True
    if field in REGEX_FILTERS:
        return bool(EXPRESSION_REFUSALS.search(message))
    no_body = case.method == "POST" and not isinstance(case.body, (dict, list, str))
    return no_body and field in ("url", "title") and message.endswith("is required")


def test_the_document_and_the_validation_agree_on_every_links_operation(link_chain):  # noqa: F811
    schema = schemathesis.openapi.from_url(f"{link_chain.gateway.base_url}/v1/openapi.json", timeout=10)
    headers = link_chain.new_user("schema")
    disagreements: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path != "/v1/links":
            continue
        operations += 1
        for mode in GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def call(case) -> None:
                response = case.call(headers=headers, timeout=30)
                positive = case.meta.generation.mode.is_positive  # a negative strategy may yield a valid case
                if positive and refused_for_what_the_schema_cannot_say(case, response):
                    return
                if not positive and response.status_code in SIZE_REFUSALS:
                    return  # refused, as it should be, by the server before any parsing
                try:
                    case.validate_response(response, checks=[
                        not_a_server_error, negative_data_rejection, positive_data_acceptance])
                except (Failure, FailureGroup) as failure:
                    disagreements.append(f"{mode.value} {case.method} {case.formatted_path} -> {response.status_code} "
                                         f"{response.text[:300]}: {str(failure).splitlines()[0][:200]}; "
                                         f"query={str(case.query)[:500]} body={str(case.body)[:500]}")

            call()
    assert operations == 4
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n\n".join(disagreements[:15])


@pytest.mark.parametrize("name", ["MAX_URL_LENGTH", "MAX_TITLE_LENGTH", "MAX_DESCRIPTION_LENGTH", "MAX_TAGS",
                                  "MAX_TAG_LENGTH", "MAX_PATTERN_LENGTH", "DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE"])
def test_the_document_states_the_link_services_limits(name):
    # The link domain may not import the document's models (pydantic): the two say the same numbers, checked here.
    assert getattr(public_api, name) == getattr(domain, name)


def test_the_document_states_the_page_token_limit():
    assert public_api.MAX_PAGE_TOKEN_LENGTH == pages.MAX_TOKEN_LENGTH


def test_the_characters_a_url_host_may_not_have_are_those_python_refuses():
    """urlsplit refuses a host holding a character whose NFKC form has one of / ? # @ : (this Python's Unicode)."""
    refused = [code for code in range(0x80, sys.maxunicode + 1)
               if any(mark in unicodedata.normalize("NFKC", chr(code)) for mark in "/?#@:")]
    listed = re.findall(r"\\u([0-9a-f]{4})(?:-\\u([0-9a-f]{4}))?", public_api.NFKC_URL_DELIMITERS)
    expanded = [code for low, high in listed for code in range(int(low, 16), int(high or low, 16) + 1)]
    assert expanded == refused


@given(url=strategies.from_regex(public_api.URL_PATTERN, fullmatch=True).filter(lambda url: len(url) <= 2048),
       title=strategies.from_regex(public_api.TITLE_PATTERN, fullmatch=True).filter(lambda text: len(text) <= 500),
       tag=strategies.from_regex(public_api.TAG_PATTERN, fullmatch=True).filter(lambda text: len(text) <= 64))
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_whatever_the_documents_patterns_allow_the_link_service_accepts(url, title, tag):
    link = domain.NewLink.parse({"url": url, "title": title, "tags": [tag]})
    assert domain.normalise_url(link.url)
