"""What a hostile or careless client sends, black-box: each attack is a 4xx in the JSON error shape for that
client, and every test then proves that ANOTHER user is unaffected: answered, and quickly (a 4xx is never a
failure of a dependency, so it opens no circuit breaker, and the work an attack causes is bounded).

Regular expressions. PostgreSQL's engine is not a backtracking one: the patterns that are catastrophic for
backtracking engines (`(a+)+$`, `^(a|aa)+$`) are linear for it and are simply answered, while what is costly for
it is refused. Back references (which it matches by backtracking, exponentially) are refused before any query
runs (400 naming the parameter); an expression the static look accepts but that still costs PostgreSQL seconds
(nested counted repetitions: seconds to compile) hits the link service's per-listing budget and is a 400
`filter_too_costly` (services/link/README.md), well before the gateway's own timeout, so the gateway never retries
it.

The bounds below are generous on purpose (a busy CI machine): "quickly" is under 2 s for a plain request of
another user, and under the gateway's downstream timeout (3 s) for a costly filter's answer.
"""
from __future__ import annotations

import base64
import http.client
import itertools
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from delinkcious_client import (
    Cleanup,
    GatewaySession,
    Settings,
    User,
    assert_error,
    assert_ok,
    assert_raw_error,
    new_session,
    send_chunked,
    timed,
)

PLAIN_REQUEST_S = 2.0  # another user's GET /v1/links, measured by the client, while or after an attack runs
COSTLY_FILTER_ANSWER_S = 3.0  # the gateway's DOWNSTREAM_TIMEOUT: a costly filter's 400 comes before it
ATTACKERS = 6  # the same attack, sent at once by one user
# Accepted by the link service's static look (its counted repetitions multiply to 1,728 copies, nothing
# repeated can be empty), yet PostgreSQL takes about 4 s to compile it: only the budget stops it.
COSTLY_TO_COMPILE = r"((((((.){0,3}){0,3}){0,3}){0,4}){0,4}){0,4}!"
# Catastrophic for a backtracking engine; linear for PostgreSQL's.
BACKTRACKING_CLASSICS = (r"^(a+)+$", r"^(a|aa)+$", r"^(a|a)*$", r"(x+x+)+y", r"^(\w+\s?)*$")
# Catastrophic for PostgreSQL too: back references are matched by backtracking.
BACK_REFERENCES = (r"^(a+)+\1$", r"(.+)(.+)\2\1", r"^((a|aa)+)\1!")
REGEX_FILTERS = ("url_regex", "title_regex", "description_regex")


def assert_unaffected(settings: Settings, bystander: User) -> None:
    """Another user, on a connection of their own, is answered at once: no breaker opened, nothing waits."""
    with new_session(settings) as session:
        for path in ("/v1/links", "/v1/me"):
            response, seconds = timed(lambda: session.get(path, headers=bystander.bearer))
            assert_ok(response)
            assert seconds < PLAIN_REQUEST_S, f"{path} took {seconds:.2f} s"


@pytest.fixture
def attacker_links(api: GatewaySession, alice: User, run_id: str, cleanup: Cleanup) -> User:
    """Alice, with a few links whose titles and descriptions are what backtracking engines choke on."""
    for index in range(5):
        url = f"https://attack.invalid/{run_id}/{index}/" + "a" * 40
        assert_ok(api.post("/v1/links", json={"url": url, "title": "a" * 499 + "!",
                                              "description": "a" * 4999 + "!"}, headers=alice.bearer), 201)
        cleanup.delete_link(alice, url)
    return alice


# --- regular expression filters -------------------------------------------------------------------------------


def test_a_costly_regex_sent_six_times_at_once_is_a_quick_400_and_another_user_stays_fast(
        settings: Settings, attacker_links: User, bob: User) -> None:
    attacker = attacker_links

    def attack(index: int) -> tuple[requests.Response, float]:
        with new_session(settings) as session:  # each on its own connection, as concurrent clients are
            # A different expression each time: PostgreSQL caches the expressions it compiled.
            return timed(lambda: session.get("/v1/links", params={"title_regex": f"{COSTLY_TO_COMPILE}{index}"},
                                             headers=attacker.bearer, timeout=30))

    def plain() -> tuple[requests.Response, float]:
        with new_session(settings) as session:
            return timed(lambda: session.get("/v1/links", headers=bob.bearer, timeout=30))

    with ThreadPoolExecutor(max_workers=ATTACKERS + 3) as pool:
        attacks = [pool.submit(attack, index) for index in range(ATTACKERS)]
        bystanders = [pool.submit(plain) for _ in range(3)]  # while the attacks are in PostgreSQL
        answers = [future.result() for future in attacks]
        plain_answers = [future.result() for future in bystanders]
    for response, seconds in answers:
        assert_error(response, 400, field="title_regex", code="filter_too_costly")
        assert seconds < COSTLY_FILTER_ANSWER_S, [round(s, 2) for _, s in answers]
    for response, seconds in plain_answers:
        assert_ok(response)
        assert seconds < PLAIN_REQUEST_S, [round(s, 2) for _, s in plain_answers]
    assert_unaffected(settings, bob)


@pytest.mark.parametrize("pattern", BACK_REFERENCES)
def test_a_regex_that_backtracks_in_postgresql_is_refused_at_once(
        settings: Settings, attacker_links: User, bob: User, pattern: str) -> None:
    attacker = attacker_links

    def attack(field: str) -> tuple[requests.Response, float]:
        with new_session(settings) as session:
            return timed(lambda: session.get("/v1/links", params={field: pattern}, headers=attacker.bearer))

    with ThreadPoolExecutor(max_workers=ATTACKERS) as pool:
        answers = list(pool.map(attack, itertools.islice(itertools.cycle(REGEX_FILTERS), ATTACKERS)))
    for (response, seconds), field in zip(answers, itertools.cycle(REGEX_FILTERS)):
        assert_error(response, 400, field=field)
        assert seconds < PLAIN_REQUEST_S, seconds
    assert_unaffected(settings, bob)


def test_the_classic_catastrophic_patterns_are_answered_quickly(
        settings: Settings, attacker_links: User, bob: User) -> None:
    """They pin a backtracking engine on these titles; PostgreSQL's matches them in linear time."""
    attacker = attacker_links

    def attack(pattern: str) -> tuple[requests.Response, float]:
        with new_session(settings) as session:
            return timed(lambda: session.get("/v1/links", params={"title_regex": pattern,
                                                                  "description_regex": pattern},
                                             headers=attacker.bearer))

    with ThreadPoolExecutor(max_workers=ATTACKERS) as pool:
        answers = list(pool.map(attack, BACKTRACKING_CLASSICS * 2))
    for response, seconds in answers:
        assert_ok(response)
        assert seconds < PLAIN_REQUEST_S, [round(s, 2) for _, s in answers]
    assert_unaffected(settings, bob)


def test_a_nul_byte_in_a_regex_filter_ten_times_is_a_400_each_and_opens_no_breaker(
        api: GatewaySession, settings: Settings, alice: User, bob: User) -> None:
    for index, field in zip(range(10), itertools.cycle(REGEX_FILTERS)):
        assert_error(api.get("/v1/links", params={field: f"a\x00{index}"}, headers=alice.bearer), 400, field=field)
    assert_unaffected(settings, bob)


def test_invalid_regexes_ten_times_are_a_400_each_and_open_no_breaker(
        api: GatewaySession, settings: Settings, attacker_links: User, bob: User) -> None:
    """Invalid for PostgreSQL, not for the document: these reach the link service, whose 400 the gateway passes on
    without counting it against the link service's breaker (5 failures in a row would open it)."""
    for index, field in zip(range(10), itertools.cycle(REGEX_FILTERS)):
        pattern = ("[z-a]", "a{3,2}", "(unclosed", "x**")[index % 4]
        assert_error(api.get("/v1/links", params={field: pattern}, headers=attacker_links.bearer), 400,
                     field=field)
    assert_unaffected(settings, bob)


# --- bodies -------------------------------------------------------------------------------------------------


BODY_ROUTES = (("POST", "/v1/links"), ("PUT", "/v1/links"), ("POST", "/v1/following"))


def test_json_nested_30000_levels_is_a_400(api: GatewaySession, settings: Settings, alice: User,
                                            bob: User) -> None:
    headers = {**alice.bearer, "Content-Type": "application/json"}
    arrays = b"[" * 30_000 + b"]" * 30_000  # 60,000 bytes: under the 64 KiB body limit, so it is parsed
    objects = b'{"a":' * 10_000 + b"1" + b"}" * 10_000  # as deep as objects get within the limit
    inside = b'{"url": "https://attack.invalid/deep", "title": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    for method, path in BODY_ROUTES:
        for body in (arrays, objects, inside):
            assert len(body) < 64 * 1024
            assert_error(api.request(method, path, data=body, headers=headers), 400)
    assert_unaffected(settings, bob)


def test_a_lone_utf16_surrogate_in_a_string_is_a_400_naming_the_field(
        api: GatewaySession, settings: Settings, alice: User, bob: User) -> None:
    headers = {**alice.bearer, "Content-Type": "application/json"}
    url = "https://attack.invalid/surrogate"
    cases = [
        ("POST", "/v1/links", {"url": url, "title": "\\ud800"}, "title"),
        ("POST", "/v1/links", {"url": url, "title": "ok", "description": "before \\udfff after"}, "description"),
        ("POST", "/v1/links", {"url": url, "title": "ok", "tags": ["fine", "\\udbff"]}, "tags"),
        ("POST", "/v1/links", {"url": url + "/\\ud83d", "title": "ok"}, "url"),
        ("PUT", "/v1/links", {"url": url, "title": "x\\udc00"}, "title"),
        ("PUT", "/v1/links", {"url": url, "add_tags": ["\\ud800"]}, "add_tags"),
        ("POST", "/v1/following", {"followed": "\\udc00"}, "followed"),
    ]
    for method, path, fields, field in cases:
        # The escape is written into the JSON text as it is: json.dumps would refuse to encode a lone surrogate.
        body = json.dumps(fields).replace("\\\\u", "\\u").encode()
        assert_error(api.request(method, path, data=body, headers=headers), 400, field=field)
    assert_unaffected(settings, bob)


def test_a_10_mb_body_sent_chunked_without_a_length_is_a_413(settings: Settings, alice: User, bob: User) -> None:
    def ten_megabytes() -> Iterator[bytes]:
        yield b'{"url": "https://attack.invalid/big", "title": "big", "description": "'
        for _ in range(10 * 1024):
            yield b"x" * 1024
        yield b'"}'

    for method, path in BODY_ROUTES:
        answer = send_chunked(settings.base_url, method, path, {**alice.bearer, "Content-Type": "application/json"},
                              ten_megabytes(), timeout=settings.request_timeout)
        assert_raw_error(answer, 413)
    assert_unaffected(settings, bob)


def test_after_a_413_the_connection_serves_the_next_request_or_was_announced_closed(
        settings: Settings, alice: User) -> None:
    target = urlsplit(settings.base_url)
    connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    # http.client reuses the connection unless the answer said `Connection: close` (then it opens a new one).
    connection = connection_class(target.hostname or "", target.port, timeout=settings.request_timeout)
    try:
        connection.request("POST", target.path.rstrip("/") + "/v1/links", body=b"x" * (150 * 1024),
                           headers={**alice.bearer, "Content-Type": "application/json"})
        too_large = connection.getresponse()
        too_large.read()
        assert too_large.status == 413
        connection.request("GET", target.path.rstrip("/") + "/v1/me", headers=alice.bearer)
        me = connection.getresponse()
        assert me.status == 200 and json.loads(me.read())["username"] == alice.username
    finally:
        connection.close()


# --- the request line and headers ------------------------------------------------------------------------------


def test_an_over_long_request_line_is_a_414_in_the_json_error_shape(
        settings: Settings, alice: User, bob: User) -> None:
    with new_session(settings) as session:
        assert_error(session.get("/v1/links", params={"padding": "x" * 20_000},
                                 headers=alice.bearer), 414)
    with new_session(settings) as session:
        assert_error(session.get("/v1/" + "x" * 20_000), 414)
    assert_unaffected(settings, bob)


def test_an_over_long_header_is_a_431_in_the_json_error_shape(settings: Settings, alice: User, bob: User) -> None:
    with new_session(settings) as session:
        assert_error(session.get("/v1/links", headers={**alice.bearer, "X-Padding": "y" * 20_000}), 431)
    with new_session(settings) as session:
        many = {f"X-Padding-{index}": "y" for index in range(200)}
        assert_error(session.get("/v1/links", headers={**alice.bearer, **many}), 431)
    with new_session(settings) as session:
        assert_error(session.get("/v1/links", headers={"Authorization": "Bearer " + "A" * 20_000}), 431)
    assert_unaffected(settings, bob)


# --- paging parameters ----------------------------------------------------------------------------------------


PAGED = ("/v1/links", "/v1/news", "/v1/following", "/v1/followers")
BAD_LIMITS = ("0", "-1", "101", "100000", "1e3", "1.5", "abc", "", "9" * 40, "0x10")


def forged_page_tokens() -> list[str]:
    """Tokens a client could make up: any of them is a 400, whatever the service's tokens look like."""
    def encoded(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return ["garbage!", "%%%", "A" * 2000, "-", "null", encoded({"a": 2 ** 70, "f": "x", "s": "y"}),
            encoded({"a": -1, "f": "x", "s": "y"}), encoded({"a": [[[[[[[[[[[]]]]]]]]]]]}), encoded([]),
            encoded(10 ** 30), encoded("x" * 600)]


def test_out_of_range_or_garbage_limits_and_page_tokens_are_a_400(
        api: GatewaySession, settings: Settings, alice: User, bob: User) -> None:
    for path in PAGED:
        for limit in BAD_LIMITS:
            assert_error(api.get(path, params={"limit": limit}, headers=alice.bearer), 400, field="limit")
        for token in forged_page_tokens():
            assert_error(api.get(path, params={"start_token": token}, headers=alice.bearer), 400,
                         field="start_token")
    assert_unaffected(settings, bob)


def test_a_real_page_token_with_an_out_of_range_position_is_a_400(
        api: GatewaySession, settings: Settings, alice: User, bob: User, run_id: str, cleanup: Cleanup) -> None:
    """A client may guess that a token is base64 JSON and change the position in it: the result is a 400 (the
    token is sealed), never a 5xx."""
    for index in range(2):
        url = f"https://attack.invalid/{run_id}/position/{index}"
        assert_ok(api.post("/v1/links", json={"url": url, "title": "p"}, headers=alice.bearer), 201)
        cleanup.delete_link(alice, url)
    token = assert_ok(api.get("/v1/links", params={"limit": 1}, headers=alice.bearer))["next_token"]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        decoded = None
    changed = []
    if isinstance(decoded, dict):  # change every integer in it to values no listing has
        for key, value in decoded.items():
            if isinstance(value, int):
                for position in (2 ** 63, 2 ** 80, -(2 ** 63) - 1, 0, -1, "1; DROP TABLE links"):
                    forged = {**decoded, key: position}
                    changed.append(base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("="))
    changed.append(token[: len(token) // 2])
    for forged in changed:
        assert_error(api.get("/v1/links", params={"start_token": forged}, headers=alice.bearer), 400,
                     field="start_token")
    assert_unaffected(settings, bob)
