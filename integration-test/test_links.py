"""Links through the public API: add (JSON, query and form styles), duplicates, filters, paging,
update and delete."""

from __future__ import annotations

from typing import Any

import pytest
from delinkcious_client import Cleanup, GatewaySession, User, assert_error, assert_ok, parse_timestamp, walk_pages


@pytest.fixture
def site(run_id: str) -> str:
    """A host no one else's links use; `.invalid` never resolves, so checks of these fail quickly."""
    return f"https://it-{run_id}.links.invalid"


def add(api: GatewaySession, user: User, cleanup: Cleanup, **fields: Any) -> dict[str, Any]:
    link: dict[str, Any] = assert_ok(api.post("/v1/links", json=fields, headers=user.bearer), 201)
    cleanup.delete_link(user, fields["url"])
    return link


def listed(api: GatewaySession, user: User, **params: Any) -> list[dict[str, Any]]:
    params.setdefault("limit", 100)
    links: list[dict[str, Any]] = assert_ok(api.get("/v1/links", params=params, headers=user.bearer))["links"]
    return links


def urls(links: list[dict[str, Any]]) -> list[str]:
    return [link["url"] for link in links]


def test_add_a_link_as_json_and_read_it_back(
    api: GatewaySession, alice: User, cleanup: Cleanup, site: str, run_id: str
) -> None:
    tag = f"json-{run_id}"
    link = add(api, alice, cleanup, url=f"{site}/json", title="A JSON link", description="Saved as JSON",
               tags=[tag, "Docs", "docs"])  # fmt: skip
    assert link["url"] == f"{site}/json"
    assert (link["title"], link["description"]) == ("A JSON link", "Saved as JSON")
    assert link["tags"] == [tag, "docs"], link
    assert link["status"] == "pending", link
    created, updated = parse_timestamp(link["created_at"]), parse_timestamp(link["updated_at"])
    assert created <= updated

    [read] = listed(api, alice, tag=tag)
    assert {key: read[key] for key in ("url", "title", "description", "tags")} == {
        key: link[key] for key in ("url", "title", "description", "tags")
    }
    assert read["status"] in ("pending", "valid", "invalid")


def test_add_links_the_original_way_with_query_parameters_and_as_a_form(
    api: GatewaySession, alice: User, cleanup: Cleanup, site: str, run_id: str
) -> None:
    query_tag, form_tag = f"query-{run_id}", f"form-{run_id}"
    # The original Delinkcious clients: POST /v1/links?url=...&title=... with no body.
    by_query = api.post("/v1/links", params={"url": f"{site}/query", "title": "By query", "tags": f"{query_tag},x"},
                        headers=alice.access_token)  # fmt: skip
    cleanup.delete_link(alice, f"{site}/query")
    link = assert_ok(by_query, 201)
    assert (link["url"], link["title"], link["tags"]) == (f"{site}/query", "By query", [query_tag, "x"])

    by_form = api.post("/v1/links", data={"url": f"{site}/form", "title": "By form", "description": "a form",
                                          "tags": [form_tag, "y"]}, headers=alice.bearer)  # fmt: skip
    cleanup.delete_link(alice, f"{site}/form")
    link = assert_ok(by_form, 201)
    assert (link["url"], link["title"], link["description"]) == (f"{site}/form", "By form", "a form")
    assert link["tags"] == [form_tag, "y"]

    assert urls(listed(api, alice, tag=query_tag)) == [f"{site}/query"]
    assert urls(listed(api, alice, tag=form_tag)) == [f"{site}/form"]


def test_links_are_private_to_their_owner(
    api: GatewaySession, alice: User, bob: User, cleanup: Cleanup, site: str, run_id: str
) -> None:
    tag = f"mine-{run_id}"
    add(api, alice, cleanup, url=f"{site}/alice-only", title="Alice's", tags=[tag])
    assert listed(api, bob, tag=tag) == []
    # Bob may save the same URL: it is his own link.
    add(api, bob, cleanup, url=f"{site}/alice-only", title="Bob's", tags=[tag])
    assert [link["title"] for link in listed(api, alice, tag=tag)] == ["Alice's"]


def test_saving_a_url_twice_is_a_conflict_that_shows_the_existing_link(
    api: GatewaySession, alice: User, cleanup: Cleanup, site: str
) -> None:
    first = add(api, alice, cleanup, url=f"{site}/twice/", title="First")
    for again in (f"{site}/twice/", f"{site.replace('https://', 'HTTPS://')}:443/twice"):
        body = assert_error(api.post("/v1/links", json={"url": again, "title": "Second"}, headers=alice.bearer), 409)
        existing = body.get("link", body)
        assert (existing["url"], existing["title"]) == (first["url"], "First"), body


def test_filters_by_tag_and_regular_expressions(
    api: GatewaySession, alice: User, cleanup: Cleanup, site: str, run_id: str
) -> None:
    tag = f"filter-{run_id}"
    add(api, alice, cleanup, url=f"{site}/python/guide", title="Python guide", description="snakes and eggs",
        tags=[tag, "python"])  # fmt: skip
    add(api, alice, cleanup, url=f"{site}/rust/book", title="Rust book", description="crabs",
        tags=[tag, "rust"])  # fmt: skip
    add(api, alice, cleanup, url=f"{site}/python/news", title="Weekly news", description="more snakes",
        tags=[tag, "python", "news"])  # fmt: skip

    assert urls(listed(api, alice, tag=tag)) == [f"{site}/python/news", f"{site}/rust/book", f"{site}/python/guide"]
    assert urls(listed(api, alice, tag=[tag, "python"])) == [f"{site}/python/news", f"{site}/python/guide"]
    assert urls(listed(api, alice, tag=tag, url_regex="/rust/")) == [f"{site}/rust/book"]
    assert urls(listed(api, alice, tag=tag, title_regex="^(Python|Rust) ")) == [
        f"{site}/rust/book", f"{site}/python/guide"]  # fmt: skip
    assert urls(listed(api, alice, tag=tag, description_regex="^(more )?snakes")) == [
        f"{site}/python/news", f"{site}/python/guide"]  # fmt: skip
    assert urls(listed(api, alice, tag=tag, url_regex="python", title_regex="news")) == [f"{site}/python/news"]
    assert listed(api, alice, tag=tag, title_regex="^nothing matches$") == []


@pytest.mark.parametrize("parameter", ["url_regex", "title_regex", "description_regex"])
def test_an_invalid_regular_expression_is_a_400_naming_the_parameter(
    api: GatewaySession, alice: User, parameter: str
) -> None:
    response = api.get("/v1/links", params={parameter: "(unclosed"}, headers=alice.bearer)
    assert_error(response, 400, field=parameter)


def test_invalid_links_are_refused_naming_the_field(api: GatewaySession, alice: User, site: str) -> None:
    assert_error(api.post("/v1/links", json={"title": "no url"}, headers=alice.bearer), 400, field="url")
    assert_error(api.post("/v1/links", json={"url": "ftp://x.invalid/", "title": "t"}, headers=alice.bearer), 400,
                 field="url")  # fmt: skip
    assert_error(api.post("/v1/links", json={"url": f"{site}/untitled"}, headers=alice.bearer), 400, field="title")
    assert_error(api.post("/v1/links", json={"url": f"{site}/t", "title": "t", "tags": "not-a-list"},
                          headers=alice.bearer), 400, field="tags")  # fmt: skip
    assert_error(api.get("/v1/links", params={"limit": "0"}, headers=alice.bearer), 400, field="limit")
    assert_error(api.get("/v1/links", params={"start_token": "not-a-token"}, headers=alice.bearer), 400,
                 field="start_token")  # fmt: skip


def test_walking_all_pages_returns_every_link_once_even_while_links_are_added(
    api: GatewaySession, alice: User, cleanup: Cleanup, site: str, run_id: str
) -> None:
    tag = f"pages-{run_id}"
    saved = [add(api, alice, cleanup, url=f"{site}/page/{index}", title=f"Link {index}", tags=[tag])["url"]
             for index in range(7)]  # fmt: skip
    newest_first = list(reversed(saved))

    pages = [urls(page) for page in walk_pages(api, "/v1/links", alice, "links", {"tag": tag, "limit": 3})]
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]

    # Links added in the middle of a walk do not shift it.
    walk = walk_pages(api, "/v1/links", alice, "links", {"tag": tag, "limit": 3})
    seen = urls(next(walk))
    added_meanwhile = add(api, alice, cleanup, url=f"{site}/page/late", title="Late", tags=[tag])["url"]
    for page in walk:
        seen += urls(page)
    assert seen == newest_first
    assert urls(listed(api, alice, tag=tag))[0] == added_meanwhile


def test_update_a_link(api: GatewaySession, alice: User, cleanup: Cleanup, site: str, run_id: str) -> None:
    tag = f"update-{run_id}"
    original = add(api, alice, cleanup, url=f"{site}/update", title="Before", tags=[tag, "old", "keep"])
    updated = assert_ok(api.put("/v1/links", json={"url": f"{site}/update", "title": "After", "description": "new",
                                                   "add_tags": ["new"], "remove_tags": ["old"]},
                                headers=alice.bearer))  # fmt: skip
    assert (updated["title"], updated["description"]) == ("After", "new")
    assert updated["tags"] == [tag, "keep", "new"], updated
    assert updated["created_at"] == original["created_at"]
    assert parse_timestamp(updated["updated_at"]) >= parse_timestamp(original["updated_at"])
    [read] = listed(api, alice, tag=tag)
    assert (read["title"], read["tags"]) == ("After", [tag, "keep", "new"])

    missing = api.put("/v1/links", json={"url": f"{site}/never-saved", "title": "x"}, headers=alice.bearer)
    assert_error(missing, 404)
    assert_error(api.put("/v1/links", json={"title": "no url"}, headers=alice.bearer), 400, field="url")


def test_delete_a_link(api: GatewaySession, alice: User, cleanup: Cleanup, site: str, run_id: str) -> None:
    tag = f"delete-{run_id}"
    add(api, alice, cleanup, url=f"{site}/delete/a", title="Goes", tags=[tag])
    add(api, alice, cleanup, url=f"{site}/delete/b", title="Stays", tags=[tag])
    assert_ok(api.delete("/v1/links", params={"url": f"{site}/delete/a"}, headers=alice.bearer), 200, 204)
    assert urls(listed(api, alice, tag=tag)) == [f"{site}/delete/b"]
    assert_error(api.delete("/v1/links", params={"url": f"{site}/delete/a"}, headers=alice.bearer), 404)
    assert_error(api.delete("/v1/links", params={"url": f"{site}/never-saved"}, headers=alice.bearer), 404)
    assert_error(api.delete("/v1/links", headers=alice.bearer), 400, field="url")
