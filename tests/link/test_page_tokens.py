"""Link page tokens (kit/core/pages.py's PageTokens, as the link service uses them): signed with the service's
PAGE_TOKEN_SECRET (required), bound to the user and the filters, refused when changed, forged, made under another
secret or out of range."""
from __future__ import annotations

import base64
import json

import pytest
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.kit.core.pages import MAX_TOKEN_LENGTH, PageTokens
from delinkcious.kit.serving.config import ConfigurationError, load_settings
from delinkcious.link.app import DEFINITION as LINK
from delinkcious.link.app import LinkSettings
from delinkcious.link.domain import LinkFilter, NewLink
from delinkcious.link.repository import InMemoryLinkRepository, InMemoryUnitOfWork
from delinkcious.link.service import LinkService

from tests.support.assertions import assert_error
from tests.support.services import unique_username

SECRET = b"k" * 32


def rewritten(token: str, change) -> str:
    body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    change(body)
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def refusal(tokens: PageTokens, token: str, listing) -> str:
    with pytest.raises(InvalidInput) as raised:
        tokens.decode(token, listing)
    assert raised.value.field == "start_token"
    return raised.value.message


@pytest.mark.parametrize("tokens", [PageTokens(SECRET), PageTokens()], ids=["signed", "unsigned"])
def test_round_trip_other_listings_and_changed_positions(tokens):
    token = tokens.encode([1_700_000_000_000, 3], ["news", "ann"])
    assert tokens.decode(token, ["news", "ann"]) == [1_700_000_000_000, 3]
    assert "another listing" in refusal(tokens, token, ["news", "bob"])
    assert "changed" in refusal(tokens, rewritten(token, lambda body: body["a"].__setitem__(1, 4)), ["news", "ann"])
    assert "not a valid page token" in refusal(tokens, rewritten(token, lambda body: body.pop("s")), ["news", "ann"])


def test_only_the_holder_of_the_secret_can_make_a_token():
    signed = PageTokens(SECRET)
    listing = ["links", "ann", [None, None, None, []]]
    assert "changed" in refusal(signed, PageTokens().encode(5, listing), listing)
    assert "changed" in refusal(signed, PageTokens(b"x" * 32).encode(5, listing), listing)
    with pytest.raises(ValueError):
        PageTokens(b"short")


@pytest.mark.parametrize("position", [2**63, -(2**63) - 1, 1.5, {"a": 1}, [[[1]]]])
def test_a_position_no_listing_writes_is_refused_even_with_a_valid_seal(position):
    assert "not a valid page token" in refusal(PageTokens(), PageTokens().encode(position, "l"), "l")


def test_an_oversized_token_is_refused_unread():
    assert "not a valid page token" in refusal(PageTokens(), "A" * (MAX_TOKEN_LENGTH + 1), "l")


def test_link_listings_bind_their_tokens_to_the_user_and_the_filters():
    store = InMemoryLinkRepository()
    service = LinkService(lambda: InMemoryUnitOfWork(store), max_links_per_user=100, page_tokens=PageTokens(SECRET))
    for user in ("ann", "bob"):
        for index in range(3):
            service.add_link(user, NewLink.parse({"url": f"https://t.example/{index}", "title": "T"}))
    _, token = service.list_links("ann", LinkFilter(), start_token=None, limit=1)
    links, _ = service.list_links("ann", LinkFilter(), start_token=token, limit=1)
    assert [link.url for link in links] == ["https://t.example/1"]
    for user, link_filter in (("bob", LinkFilter()), ("ann", LinkFilter(tags=("x",)))):
        with pytest.raises(InvalidInput) as raised:
            service.list_links(user, link_filter, start_token=token, limit=1)
        assert raised.value.field == "start_token" and "another listing" in raised.value.message


def test_the_secret_is_a_required_setting_of_at_least_32_characters(tmp_path, monkeypatch):
    base = {"service_name": "link", "database_url": "postgresql://link@db/link", "nats_url": "nats://nats:4222",
            "trusted_callers_dir": tmp_path, "allowed_callers": "api-gateway"}
    monkeypatch.delenv("PAGE_TOKEN_SECRET", raising=False)
    monkeypatch.delenv("PAGE_TOKEN_SECRET_FILE", raising=False)
    with pytest.raises(ConfigurationError, match="PAGE_TOKEN_SECRET: Field required"):
        load_settings(LinkSettings, **base)
    secret_file = tmp_path / "page-token-secret"
    secret_file.write_text("s" * 40 + "\n")
    monkeypatch.setenv("PAGE_TOKEN_SECRET_FILE", str(secret_file))
    assert load_settings(LinkSettings, **base).page_token_secret.get_secret_value() == "s" * 40
    monkeypatch.delenv("PAGE_TOKEN_SECRET_FILE")
    with pytest.raises(ConfigurationError, match="PAGE_TOKEN_SECRET"):
        load_settings(LinkSettings, **base, page_token_secret="too short")


# --- the served service ----------------------------------------------------------------------------------------------

SERVED_SECRET = "link-page-token-secret-" + "x" * 20


@pytest.fixture(scope="module")
def link_client(service_environment):
    with service_environment.running(LINK, page_token_secret=SERVED_SECRET) as (_, app):
        yield app.test_client()


def test_the_service_signs_with_its_secret_and_refuses_a_token_made_under_another(link_client, service_environment):
    headers = service_environment.caller_headers("api-gateway")
    user = unique_username()
    for index in range(3):
        link_client.post(f"/v1/users/{user}/links", json={"url": f"https://s.example/{index}", "title": "t"},
                         headers=headers)
    token = link_client.get(f"/v1/users/{user}/links", query_string={"limit": 1}, headers=headers
                            ).get_json()["next_token"]
    position = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["a"]
    listing = ["links", user, [None, None, None, []]]

    def page(start_token: str):
        return link_client.get(f"/v1/users/{user}/links", query_string={"limit": 1, "start_token": start_token},
                               headers=headers)

    assert page(PageTokens(SERVED_SECRET.encode()).encode(position, listing)).get_json()["links"][0]["url"] == \
        "https://s.example/1"  # the service's secret is the one it was given
    for other in (PageTokens(b"another-secret-" + b"y" * 20), PageTokens()):
        refused = page(other.encode(position, listing))
        assert_error(refused, 400, "invalid_input", field="start_token")
        assert "changed" in refused.get_json()["message"]
