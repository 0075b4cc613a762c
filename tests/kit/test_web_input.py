"""What any service's web layer (kit/serving/web.py) does with input a client should not have sent: JSON nested
without bound, strings no store can keep (a NUL byte, an unpaired UTF-16 surrogate), a body of unknown length
past the limit. Each is the client's 4xx in the standard error shape, naming the field, never a 500 nor a failure
of the service's database. Driven through the link service, wired as in production (real PostgreSQL)."""
from __future__ import annotations

import io
from typing import Any

import pytest
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.kit.core.validation import check_json_depth, check_json_text
from delinkcious.link.app import DEFINITION

from tests.support.assertions import assert_error
from tests.support.services import unique_username


@pytest.fixture(scope="module")
def link_app(service_environment):
    with service_environment.running(DEFINITION) as (_runtime, app):
        yield app


@pytest.fixture
def links(link_app, service_environment):
    client = link_app.test_client()
    headers = service_environment.caller_headers()
    user = unique_username()

    def call(method: str, *, query: str = "", **kwargs: Any) -> Any:
        kwargs.setdefault("headers", {}).update(headers)
        return client.open(f"/v1/users/{user}/links{query}", method=method, **kwargs)

    return call


def json_body(text: str) -> dict[str, Any]:
    """A JSON body sent as these exact characters (escapes and all), as a client would write it."""
    return {"data": text.encode(), "content_type": "application/json"}


def test_json_nested_thirty_thousand_levels_deep_is_a_400_naming_the_body(links):
    response = links("POST", **json_body('{"url": "https://deep.example", "title": "t", "tags": '
                                         + "[" * 30_000 + "]" * 30_000 + "}"))
    body = assert_error(response, 400, "invalid_input", "body")
    assert "64 levels" in body["message"]


def test_json_nesting_up_to_the_limit_is_parsed_as_usual():
    check_json_depth("[" * 64 + "]" * 64)
    check_json_depth('{"a": "' + "[" * 100 + '"}')  # brackets inside a string are text
    check_json_depth(r'{"a": "\"[[[[", "b": [[1]]}', max_depth=3)  # an escaped quote does not end the string
    with pytest.raises(InvalidInput):
        check_json_depth("[" * 65 + "]" * 65)


@pytest.mark.parametrize("text, field", [
    (r'{"url": "https://s.example", "title": "\ud800"}', "title"),
    (r'{"url": "https://s.example", "title": "t", "tags": ["ok", "\udfff"]}', "tags[1]"),
    (r'{"url": "https://s.example", "title": "x\ud83d"}', "title"),  # a high surrogate with no low one
])
def test_an_unpaired_surrogate_in_a_json_string_is_a_400_naming_the_field(links, text, field):
    body = assert_error(links("POST", **json_body(text)), 400, "invalid_input", field)
    assert "surrogate" in body["message"]


def test_a_surrogate_sent_as_utf8_bytes_is_a_400_too(links):
    # ED A0 80 is how a lone U+D800 would look in (invalid) UTF-8; json.loads lets it through as a surrogate.
    data = b'{"url": "https://s.example", "title": "\xed\xa0\x80"}'
    assert_error(links("POST", data=data, content_type="application/json"), 400, "invalid_input", "title")


def test_a_surrogate_pair_is_one_character_and_welcome(links):
    response = links("POST", **json_body(r'{"url": "https://pair.example", "title": "smile \ud83d\ude00"}'))
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["title"] == "smile \U0001F600"


def test_a_nul_character_in_a_json_string_is_a_400_naming_the_field(links):
    assert_error(links("POST", **json_body(r'{"url": "https://n.example", "title": "a\u0000b"}')),
                 400, "invalid_input", "title")


@pytest.mark.parametrize("parameter", ["url_regex", "title_regex", "description_regex", "tag"])
def test_a_nul_byte_in_a_query_parameter_is_a_400_before_the_database_sees_it(links, parameter):
    # psycopg2 refuses a NUL in a parameter (ValueError): it was a 500 from the link service, which the gateway
    # counted as the link service failing.
    assert_error(links("GET", query=f"?{parameter}=ab%00c"), 400, "invalid_input", parameter)


def test_check_json_text_names_the_path_of_the_bad_string():
    with pytest.raises(InvalidInput) as bad:
        check_json_text({"a": {"b": [1, "ok", "\ud800"]}})
    assert bad.value.field == "a.b[2]"
    with pytest.raises(InvalidInput) as bad:
        check_json_text({"a\x00": 1})
    assert bad.value.field == "body (a key)"


def test_a_body_of_unknown_length_past_the_limit_is_a_413(link_app, service_environment):
    """A chunked body has no Content-Length: Werkzeug cut it at MAX_REQUEST_BYTES and the handler took the first
    64 KiB for the whole body (400 "must be a JSON object" instead of 413)."""
    limit = service_environment.settings(DEFINITION).max_request_bytes

    def post_streamed(body: bytes) -> Any:
        # As gunicorn passes a chunked body: the stream ends where the body ends, and no CONTENT_LENGTH.
        builder_environ = {"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True}
        return link_app.test_client().post(
            f"/v1/users/{unique_username()}/links", content_type="application/json",
            headers=service_environment.caller_headers(), environ_overrides=builder_environ)

    too_large = b'{"url": "https://big.example", "title": "' + b"x" * (limit + 10) + b'"}'
    assert_error(post_streamed(too_large), 413, "payload_too_large")
    fits = b'{"url": "https://fits.example", "title": "small"}'
    assert post_streamed(fits).status_code == 201
