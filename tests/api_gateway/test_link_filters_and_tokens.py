"""Through the gateway to the real link service (tests/api_gateway/link_chain.py): a client's costly regex filter is
that client's 400, answered once, well before the gateway's own timeout, and never slows another user or opens the
gateway's breaker; link page tokens are signed and bound to their user; the public document's rules are enforced
at the gateway with the models it is generated from."""
from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
from delinkcious.kit.core.pages import PageTokens
from delinkcious.link.app import DEFINITION as LINK

from tests.api_gateway.link_chain import link_chain  # noqa: F401 - the fixture

# Accepted by the link service's static look, yet seconds of work for PostgreSQL over many long descriptions: only
# the statement timeout stops it (tests/link/test_regex_filters.py).
SLOW_BUT_ACCEPTED = r"(((a|b){0,10}){0,10}){0,10}!"
GATEWAY_DOWNSTREAM_TIMEOUT_S = 3.0


def username_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer dlk_")


def crowd(service_environment, username: str, count: int = 2000) -> None:
    """`count` links with 5,000-character descriptions, written straight to the link service's database."""
    access = service_environment.database(LINK)
    with psycopg2.connect(access.dsn, password=access.read_password()) as conn, conn.cursor() as cursor:
        cursor.execute(
            "INSERT INTO links (username, url, url_key, title, description, created_at, updated_at) "
            "SELECT %s, 'https://crowd.example/' || n, 'https://crowd.example/' || n, 'Link ' || n, "
            "repeat(md5(n::text), 156), now(), now() FROM generate_series(1, %s) AS n", (username, count))
    conn.close()


def test_costly_filters_are_the_clients_400_answered_once_and_nobody_else_waits(link_chain, service_environment):  # noqa: F811
    attacker, bystander = link_chain.new_user("attacker"), link_chain.new_user("bystander")
    crowd(service_environment, username_of(attacker))
    for index in range(3):
        assert link_chain.call("POST", "/v1/links", bystander, json={
            "url": f"https://bystander.example/{index}", "title": f"B{index}"}).status_code == 201

    def costly() -> tuple[int, dict, float]:
        started = time.monotonic()
        response = link_chain.call("GET", "/v1/links", attacker, params={"description_regex": SLOW_BUT_ACCEPTED},
                                   timeout=30)
        return response.status_code, response.json(), time.monotonic() - started

    def plain() -> tuple[int, float]:
        started = time.monotonic()
        response = link_chain.call("GET", "/v1/links", bystander, timeout=30)
        return response.status_code, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=8) as pool:
        attacks = [pool.submit(costly) for _ in range(6)]
        time.sleep(0.3)  # the six are in PostgreSQL now
        bystanders = [pool.submit(plain) for _ in range(3)]
        answers = [attack.result() for attack in attacks]
        plain_answers = [answer.result() for answer in bystanders]

    for status, body, seconds in answers:
        assert status == 400 and body["code"] == "filter_too_costly" and body["field"] == "description_regex", body
        # The link service's budget (1 s) and a little: before the gateway's own timeout, so it never retries.
        assert seconds < GATEWAY_DOWNSTREAM_TIMEOUT_S, answers
    for status, seconds in plain_answers:
        assert status == 200 and seconds < 1.0, plain_answers

    # Each costly request reached the link service once: the gateway retried none of them.
    attacker_path = f"/v1/users/{username_of(attacker)}/links"
    served = [json.loads(line) for line in link_chain.link.logs().splitlines() if line.startswith("{")]
    asked = [record for record in served if record.get("event") == "request" and record.get("path") == attacker_path]
    assert [record["status"] for record in asked] == [400] * 6
    # And the gateway's breaker for the link service stayed closed: the next requests go through at once.
    for _ in range(3):
        assert link_chain.call("GET", "/v1/links", bystander).status_code == 200


def test_refused_expressions_and_nul_bytes_are_400s_naming_the_filter(link_chain):  # noqa: F811
    user = link_chain.new_user()
    for parameter, pattern, problem in [("title_regex", r"(.+)(.+)\2\1", "back references"),
                                        ("url_regex", "(?!x)", "lookahead"),
                                        ("description_regex", "a\x00b", "NUL"),
                                        ("title_regex", "(unclosed", "invalid regular expression")]:
        for _ in range(10):  # again and again: a client's error never opens the breaker
            response = link_chain.call("GET", "/v1/links", user, params={parameter: pattern})
            assert response.status_code == 400 and response.json()["field"] == parameter, response.text
            assert problem in response.json()["message"]
    assert link_chain.call("GET", "/v1/links", user).status_code == 200


def walk_first_page(link_chain, user) -> str:  # noqa: F811
    for index in range(3):
        assert link_chain.call("POST", "/v1/links", user, json={
            "url": f"https://pages.example/{index}", "title": f"P{index}"}).status_code == 201
    first = link_chain.call("GET", "/v1/links", user, params={"limit": 2}).json()
    assert len(first["links"]) == 2 and first["next_token"]
    return first["next_token"]


def test_a_link_page_token_is_bound_to_its_user_and_signed(link_chain):  # noqa: F811
    owner, other = link_chain.new_user("owner"), link_chain.new_user("other")
    token = walk_first_page(link_chain, owner)
    assert [link["url"] for link in link_chain.call("GET", "/v1/links", owner, params={
        "limit": 2, "start_token": token}).json()["links"]] == ["https://pages.example/0"]

    stolen = link_chain.call("GET", "/v1/links", other, params={"limit": 2, "start_token": token})
    assert stolen.status_code == 400 and stolen.json()["field"] == "start_token"
    assert "not a valid page token" in stolen.json()["message"]

    # Moved to another position, with the listing digest and seal left as they were: refused.
    body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    body["a"] += 1_000_000
    tampered = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    answer = link_chain.call("GET", "/v1/links", owner, params={"start_token": tampered})
    assert answer.status_code == 400 and answer.json()["field"] == "start_token", answer.text

    # A token made for the other user's listing without the secret, the way an unsigned one could be made: refused.
    link_chain.call("POST", "/v1/links", other, json={"url": "https://pages.example/x", "title": "X"})
    forged = PageTokens().encode(10**9, ["links", username_of(other), [None, None, None, []]])
    answer = link_chain.call("GET", "/v1/links", other, params={"start_token": forged})
    assert answer.status_code == 400 and "not a valid page token" in answer.json()["message"], answer.text


def test_the_documents_rules_are_enforced_at_the_gateway(link_chain):  # noqa: F811
    user = link_chain.new_user()
    assert link_chain.call("POST", "/v1/links", user, json={"url": "https://rules.example", "title": "R"}
                           ).status_code == 201
    refused = [
        ("PUT", {"json": {"url": "https://rules.example", "remove_tags": "python"}}, "remove_tags"),
        ("PUT", {"json": {"url": "https://rules.example", "remove_tags": None}}, "remove_tags"),
        ("PUT", {"json": {"url": "https://rules.example", "add_tags": [1]}}, "add_tags"),
        ("PUT", {"json": {"url": "https://rules.example", "title": None}}, "title"),
        ("POST", {"json": {"url": "https://rules.example/2", "title": " "}}, "title"),
        ("POST", {"json": {"url": "https://rules.example/3", "title": "T", "tags": [" "]}}, "tags"),
        ("POST", {"json": {"url": "ftp://rules.example/4", "title": "T"}}, "url"),
        ("GET", {"params": {"limit": 101}}, "limit"),
        ("GET", {"params": {"limit": 0}}, "limit"),
        ("GET", {"params": {"title_regex": "x" * 257}}, "title_regex"),
        ("GET", {"params": {"start_token": "not/base64url"}}, "start_token"),
        ("DELETE", {"params": {"url": "rules.example"}}, "url"),
    ]
    for method, request, field in refused:
        response = link_chain.call(method, "/v1/links", user, **request)
        assert response.status_code == 400 and response.json()["field"] == field, (method, request, response.text)
    # Other routes' page parameters: refused at the gateway before any service is asked.
    for path in ("/v1/following", "/v1/followers", "/v1/news"):
        response = link_chain.call("GET", path, user, params={"limit": 1000})
        assert response.status_code == 400 and response.json()["field"] == "limit", (path, response.text)
    # What the document allows is accepted, from lower-cased tags to a long title.
    accepted = link_chain.call("PUT", "/v1/links", user, json={
        "url": "https://rules.example", "title": "t" * 500, "add_tags": ["İ" * 64], "remove_tags": []})
    assert accepted.status_code == 200, accepted.text
