"""The link domain's rules, without any infrastructure."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.kit.core.validation import validate_username
from delinkcious.link.domain import InconclusiveCheck, Link, LinkChanges, NewLink, normalise_url, validate_tags

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def invalid_field(call, *args, **kwargs) -> str:
    with pytest.raises(InvalidInput) as raised:
        call(*args, **kwargs)
    return raised.value.field


class TestNewLink:
    def test_minimal_link(self):
        link = NewLink.parse({"url": "https://example.com/a", "title": "A"})
        assert link == NewLink(url="https://example.com/a", title="A", description="", tags=())

    @pytest.mark.parametrize("url", [
        None, "", "   ", "example.com", "/relative/path", "ftp://example.com/file", "mailto:a@example.com",
        "javascript:alert(1)", "http://", "https:///path", "http://exa mple.com", "http://example.com:99999/",
        "http://example.com/\nx", 42, ["http://example.com"],
    ])
    def test_url_must_be_an_absolute_http_url(self, url):
        assert invalid_field(NewLink.parse, {"url": url, "title": "t"}) == "url"

    def test_url_length_limit(self):
        base = "https://example.com/"
        NewLink.parse({"url": base + "a" * (2048 - len(base)), "title": "t"})
        assert invalid_field(NewLink.parse, {"url": base + "a" * (2049 - len(base)), "title": "t"}) == "url"

    @pytest.mark.parametrize("title", [None, "", "  ", 5])
    def test_title_is_required(self, title):
        assert invalid_field(NewLink.parse, {"url": "http://e.com", "title": title}) == "title"

    def test_title_and_description_limits(self):
        NewLink.parse({"url": "http://e.com", "title": "t" * 500, "description": "d" * 5000})
        assert invalid_field(NewLink.parse, {"url": "http://e.com", "title": "t" * 501}) == "title"
        assert invalid_field(NewLink.parse, {"url": "http://e.com", "title": "t", "description": "d" * 5001}) \
            == "description"

    def test_unknown_fields_are_rejected(self):
        assert invalid_field(NewLink.parse, {"url": "http://e.com", "title": "t", "tag": ["x"]}) == "tag"


class TestTags:
    def test_lower_cased_and_deduplicated_in_order(self):
        assert validate_tags(["Python", "web", "PYTHON", " Web "]) == ("python", "web")

    @pytest.mark.parametrize("tags", [["ok", ""], ["   "], ["x" * 65], "python", [1], ["a\x01"]])
    def test_invalid_tags(self, tags):
        assert invalid_field(validate_tags, tags) == "tags"

    def test_at_most_fifty_distinct_tags(self):
        assert len(validate_tags([f"t{i}" for i in range(50)] + ["T0"])) == 50
        assert invalid_field(validate_tags, [f"t{i}" for i in range(51)]) == "tags"

    def test_tag_of_64_characters_is_fine(self):
        assert validate_tags(["x" * 64]) == ("x" * 64,)


class TestNormalisation:
    @pytest.mark.parametrize("a,b", [
        ("HTTP://Example.COM/path", "http://example.com/path"),
        ("http://example.com:80/x", "http://example.com/x"),
        ("https://example.com:443/x", "https://example.com/x"),
        ("https://example.com/x/", "https://example.com/x"),
        ("https://example.com/", "https://example.com"),
    ])
    def test_same_link(self, a, b):
        assert normalise_url(a) == normalise_url(b)

    @pytest.mark.parametrize("a,b", [
        ("https://example.com/Path", "https://example.com/path"),
        ("http://example.com/x", "https://example.com/x"),
        ("http://example.com:8080/x", "http://example.com/x"),
        ("https://example.com/x?q=1", "https://example.com/x?q=2"),
    ])
    def test_different_links(self, a, b):
        assert normalise_url(a) != normalise_url(b)


class TestUsernames:
    @pytest.mark.parametrize("name", ["a", "octo-cat", "a" * 39, "x1"])
    def test_valid_usernames(self, name):
        assert validate_username(name) == name

    @pytest.mark.parametrize("name", ["", "A", "a" * 40, "-a", "a-", "a--b", "a_b", "a.b", None])
    def test_invalid_usernames(self, name):
        assert invalid_field(validate_username, name) == "username"



class TestChanges:
    def link(self) -> Link:
        return Link(username="ann", url="http://e.com", url_key="http://e.com", title="T", description="D",
                    tags=("a", "b"), created_at=NOW, updated_at=NOW, id=1)

    def test_tags_added_and_removed(self):
        later = NOW + timedelta(seconds=5)
        changed = self.link().with_changes(title=None, description="new", add_tags=("c", "a"),
                                           remove_tags=("b",), now=later)
        assert changed.tags == ("a", "c")
        assert changed.description == "new" and changed.title == "T"
        assert changed.updated_at == later

    def test_no_change_keeps_the_same_link(self):
        link = self.link()
        assert link.with_changes(title="T", description=None, add_tags=("a",), remove_tags=(),
                                 now=NOW + timedelta(1)) is link

    def test_update_payload_validation(self):
        assert invalid_field(LinkChanges.parse, {"url": "http://e.com", "title": ""}) == "title"
        assert invalid_field(LinkChanges.parse, {"url": "http://e.com", "add_tags": "x"}) == "add_tags"
        assert invalid_field(LinkChanges.parse, {"title": "x"}) == "url"


def test_an_attempt_without_verdict_is_news_only_when_newer_than_what_the_link_knows():
    start = datetime(2026, 5, 1, tzinfo=timezone.utc)
    link = Link(username="u", url="https://a.example", url_key="https://a.example", title="t", description="",
                tags=(), created_at=start, updated_at=start)
    assert link.takes_attempt(start)  # never checked
    checked = Link(**{**link.__dict__, "status": "valid", "checked_at": start + timedelta(minutes=1)})
    assert not checked.takes_attempt(start + timedelta(minutes=1))  # the verdict is as new: it wins
    assert checked.takes_attempt(start + timedelta(minutes=2))
    recorded = InconclusiveCheck(start + timedelta(minutes=3), "HTTP 503", "http_5xx", 1, start + timedelta(hours=1))
    with_attempt = Link(**{**checked.__dict__, "inconclusive_check": recorded})
    assert not with_attempt.takes_attempt(start + timedelta(minutes=2))  # older than the recorded one
    assert with_attempt.takes_attempt(start + timedelta(minutes=3)) and with_attempt.takes_attempt(start + timedelta(minutes=4))
    assert recorded.cleared_by(start + timedelta(minutes=3)) and not recorded.cleared_by(start + timedelta(minutes=2))
