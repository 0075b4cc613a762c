"""Regex filters cannot pin PostgreSQL: a cheap static look first (link/domain.py's PatternCost), then a budget for
the whole filtered read (`SET LOCAL statement_timeout`), whose expiry is the client's 400 `filter_too_costly`.

The static rule is held to what PostgreSQL's engine really does, on the suite's real PostgreSQL: what it refuses is
costly there, and the classic catastrophic patterns of backtracking engines, which it accepts, are cheap there."""
from __future__ import annotations

import itertools
import time

import pytest
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.kit.postgres.db import Database
from delinkcious.link.app import DEFINITION
from delinkcious.link.domain import FilterTooCostly, LinkFilter, PatternCost, validate_pattern
from delinkcious.link.repository import PostgresLinkRepository, PostgresUnitOfWork
from delinkcious.link.service import LinkService

from tests.support.backends import postgres_database_fixture
from tests.support.services import unique_username

postgres_database = postgres_database_fixture(DEFINITION)

# Catastrophic for a backtracking engine (Python's re), linear for PostgreSQL's: accepted.
BACKTRACKING_CLASSICS = [r"^(a+)+$", r"^(a|a)*$", r"^(a|aa)+$", r"(x+x+)+y", r"^(\w+\s?)*$", r"(a*)*b",
                         r"^(([a-z])+.)+[A-Z]([a-z])+$", r"(.*a){20}"]
# What PostgreSQL finds costly: refused, each with the reason.
COSTLY = {
    r"(.+)(.+)\2\1": "back references",
    r"^(a+)\1$": "back references",
    r"(?!.*!)z": "lookahead",
    r"(?=(.*a){10})b": "lookahead",
    r"(([a-z ]{0,20}){0,20}){0,20}!": "expand to about 8000 copies",
    r"((x{1,255}){1,255})": "expand",
    r"(a*b*){0,255}!": "can match the empty string",
    r"(\w*\s*){0,255}": "can match the empty string",
    r"(a*|b){255}!": "can match the empty string",
    "(" * 40 + "a" + ")" * 40: "nested at most 32 deep",
    r"(?b)a\{2\}": "only advanced regular expressions",
}
ACCEPTED = BACKTRACKING_CLASSICS + [
    r"(?<=x.*)y", r"(?<!q)z", r"([a-z]{2,8}\.){1,30}[a-z]{2,6}", r"(\w+\s+){0,255}", r"(x?){25}x{25}",
    r"[[:alpha:]]{0,255}[[:digit:]]{0,255}", r"\y(go|rust)\y", r"[\1]", r"***=\1 is literal", r"(?q)\1 too",
    r"(?i)^python", r"(?x) py  thon  # a comment with \1", "(unclosed", r"a{2,",
]


@pytest.mark.parametrize("pattern,reason", COSTLY.items())
def test_costly_constructs_are_refused_naming_the_parameter(pattern, reason):
    with pytest.raises(InvalidInput) as raised:
        validate_pattern(pattern, "title_regex")
    assert raised.value.field == "title_regex"
    assert reason in raised.value.message, raised.value.message


@pytest.mark.parametrize("pattern", ACCEPTED)
def test_what_is_cheap_for_postgresql_is_accepted(pattern):
    assert PatternCost.problem(pattern) is None
    assert validate_pattern(pattern, "url_regex") == pattern


@pytest.mark.parametrize("value,problem", [("a\x00b", "NUL"), ("x" * 257, "at most 256"), (5, "must be a string")])
def test_pattern_basics(value, problem):
    with pytest.raises(InvalidInput, match=problem) as raised:
        validate_pattern(value, "description_regex")
    assert raised.value.field == "description_regex"


def test_a_filter_too_costly_names_every_filter_and_is_a_400():
    error = FilterTooCostly(["url_regex", "title_regex"], 1000)
    assert (error.status, error.code, error.field) == (400, "filter_too_costly", "url_regex")
    assert error.message.startswith("url_regex, title_regex: filter too costly") and "1000 ms" in error.message
    assert error.to_body()["fields"] == ["url_regex", "title_regex"]


# --- on the real PostgreSQL ---------------------------------------------------------------------------

def seconds_to_match(database: Database, pattern: str, text: str, timeout_ms: int) -> float:
    """How long PostgreSQL takes to match (compile included); the timeout's length if it gave up."""
    started = time.monotonic()
    with database.connection() as conn, conn.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = {timeout_ms}")
        try:
            cursor.execute("SELECT %s ~ %s", (text, pattern))
        except Exception as error:  # noqa: BLE001 - QueryCanceled, or "too complex": both are what we measure
            conn.rollback()
            if "too complex" in str(error):
                return 0.0
        finally:
            if not conn.closed:
                conn.rollback()
    return time.monotonic() - started


def test_the_classic_catastrophic_patterns_are_cheap_for_postgresql(postgres_database):
    texts = ["a" * 5000 + "!", "an example title with many words that ends badly!" * 100, "x" * 5000]
    for pattern, text in itertools.product(BACKTRACKING_CLASSICS, texts):
        assert seconds_to_match(postgres_database, pattern, text, timeout_ms=5000) < 0.5, (pattern, text[:20])


@pytest.mark.parametrize("pattern,text", [
    (r"(.+)(.+)\2\1", "".join(chr(0x4E00 + n) for n in range(300))),  # back references, no match: exponential
    (r"(\w*\s*){0,255}", "x"),  # a counted repetition of the empty: seconds to compile
    (r"(a*b*){0,255}!", "x"),
])
def test_what_is_refused_is_costly_for_postgresql(postgres_database, pattern, text):
    assert PatternCost.problem(pattern) is not None
    assert seconds_to_match(postgres_database, pattern, text, timeout_ms=1000) >= 0.9


@pytest.fixture
def crowded_user(postgres_database):
    """A user with 2,000 links whose descriptions are 5,000 characters long."""
    user = unique_username("crowded")
    with postgres_database.transaction() as cursor:
        cursor.execute(
            "INSERT INTO links (username, url, url_key, title, description, created_at, updated_at) "
            "SELECT %s, 'https://crowd.example/' || n, 'https://crowd.example/' || n, 'Link ' || n, "
            "repeat(md5(n::text), 156), now(), now() FROM generate_series(1, 2000) AS n", (user,))
    yield user
    with postgres_database.transaction() as cursor:
        cursor.execute("DELETE FROM links WHERE username = %s", (user,))


# Passes the static look (its nested counts multiply to 1,000, nothing repeated can be empty many times), yet takes
# PostgreSQL seconds over many long descriptions: the statement timeout is the guarantee.
SLOW_BUT_ACCEPTED = r"(((a|b){0,10}){0,10}){0,10}!"


def test_a_costly_filter_stops_at_the_budget_as_a_400_and_a_plain_list_is_unaffected(postgres_database, crowded_user):
    assert PatternCost.problem(SLOW_BUT_ACCEPTED) is None
    service = LinkService(lambda: PostgresUnitOfWork(postgres_database.transaction, filter_timeout_ms=300),
                          max_links_per_user=10_000)
    started = time.monotonic()
    with pytest.raises(FilterTooCostly) as raised:
        service.list_links(crowded_user, LinkFilter(description_regex=SLOW_BUT_ACCEPTED), start_token=None, limit=10)
    assert time.monotonic() - started < 2.0  # the budget (0.3 s) and a little, not the pool's 5 s statement_timeout
    assert raised.value.field == "description_regex" and raised.value.code == "filter_too_costly"
    # The transaction was rolled back: the connection serves the next request, with its own timeout again.
    links, token = service.list_links(crowded_user, LinkFilter(), start_token=None, limit=10)
    assert len(links) == 10 and token is not None
    with postgres_database.transaction() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()["statement_timeout"] == "5s"
    # An ordinary filter on the same links is well within the budget.
    links, _ = service.list_links(crowded_user, LinkFilter(title_regex="^Link 1999$"), start_token=None, limit=10)
    assert [link.title for link in links] == ["Link 1999"]


def test_the_budget_covers_compiling_the_expressions_and_the_listing_together(postgres_database):
    """Each statement gets what is left of the budget, so three filters and the listing cannot take four budgets."""
    now = [100.0]
    with postgres_database.transaction() as cursor:
        repository = PostgresLinkRepository(cursor, filter_timeout_ms=1000, clock=lambda: now[0])
        link_filter = LinkFilter(url_regex="a", title_regex="b")
        repository.check_patterns(link_filter)
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()["statement_timeout"] == "1s"
        now[0] += 0.75
        repository.list("nobody", link_filter, None, 10)
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()["statement_timeout"] == "250ms"
        now[0] += 0.25
        with pytest.raises(FilterTooCostly) as raised:
            repository.list("nobody", link_filter, None, 10)
    assert raised.value.details["fields"] == ["url_regex", "title_regex"]


def test_an_expression_costly_to_compile_is_a_400_naming_its_parameter(postgres_database):
    # Accepted by the static look (a product of 625), but PostgreSQL takes tens of milliseconds to compile it.
    pattern = r"(((x{0,5}){0,5}){0,5}){0,5}!"
    assert PatternCost.problem(pattern) is None
    with postgres_database.transaction() as cursor:
        repository = PostgresLinkRepository(cursor, filter_timeout_ms=10)
        with pytest.raises(FilterTooCostly) as raised:
            repository.check_patterns(LinkFilter(url_regex="ok", title_regex=pattern))
    assert raised.value.field == "title_regex"
