"""Following people through the public API."""

from __future__ import annotations

from delinkcious_client import Cleanup, GatewaySession, User, Users, assert_error, assert_ok, walk_pages


def following(api: GatewaySession, user: User) -> list[str]:
    return [name for page in walk_pages(api, "/v1/following", user, "following", {}) for name in page]


def followers(api: GatewaySession, user: User) -> list[str]:
    return [name for page in walk_pages(api, "/v1/followers", user, "followers", {}) for name in page]


def test_follow_list_and_unfollow(api: GatewaySession, alice: User, bob: User, cleanup: Cleanup) -> None:
    cleanup.unfollow(alice, bob.username)
    cleanup.unfollow(bob, alice.username)
    if alice.fresh and bob.fresh:
        assert following(api, alice) == [] and followers(api, bob) == []

    assert_ok(api.post("/v1/following", json={"followed": bob.username}, headers=alice.bearer), 200, 201)
    # Following twice is not an error.
    assert_ok(api.post("/v1/following", json={"followed": bob.username}, headers=alice.bearer), 200, 201)
    assert following(api, alice).count(bob.username) == 1
    assert followers(api, bob).count(alice.username) == 1
    assert alice.username not in following(api, bob)
    if alice.fresh and bob.fresh:
        assert following(api, alice) == [bob.username]
        assert followers(api, bob) == [alice.username]
        assert followers(api, alice) == []

    # Each other, newest edge first.
    assert_ok(api.post("/v1/following", json={"followed": alice.username}, headers=bob.access_token), 200, 201)
    assert alice.username in following(api, bob) and bob.username in followers(api, alice)

    assert_ok(api.delete("/v1/following", params={"followed": bob.username}, headers=alice.bearer), 200, 204)
    assert bob.username not in following(api, alice)
    assert alice.username not in followers(api, bob)
    assert alice.username in following(api, bob)  # the other direction stays
    # Unfollowing someone you do not follow is fine.
    assert_ok(api.delete("/v1/following", params={"followed": bob.username}, headers=alice.bearer), 200, 204)


def test_following_a_form_or_query_parameter_works_too(api: GatewaySession, alice: User, bob: User,
                                                       cleanup: Cleanup) -> None:  # fmt: skip
    cleanup.unfollow(alice, bob.username)
    assert_ok(api.post("/v1/following", data={"followed": bob.username}, headers=alice.bearer), 200, 201)
    assert bob.username in following(api, alice)
    assert_ok(api.delete("/v1/following", params={"followed": bob.username}, headers=alice.bearer), 200, 204)
    assert_ok(api.post("/v1/following", params={"followed": bob.username}, headers=alice.bearer), 200, 201)
    assert bob.username in following(api, alice)


def test_following_yourself_or_nobody_is_refused(api: GatewaySession, alice: User, users: Users) -> None:
    assert_error(api.post("/v1/following", json={"followed": alice.username}, headers=alice.bearer), 400,
                 field="followed")  # fmt: skip
    nobody = users.unique_name("nobody")  # never logged in
    assert_error(api.post("/v1/following", json={"followed": nobody}, headers=alice.bearer), 404)
    assert_error(api.post("/v1/following", json={"followed": "Not A Username!"}, headers=alice.bearer), 400,
                 field="followed")  # fmt: skip
    assert_error(api.post("/v1/following", json={}, headers=alice.bearer), 400, field="followed")
    assert_error(api.delete("/v1/following", headers=alice.bearer), 400, field="followed")
    assert nobody not in following(api, alice)


def test_no_one_can_make_others_follow_them(api: GatewaySession, alice: User, bob: User) -> None:
    for method in ("POST", "PUT", "DELETE"):
        response = api.request(method, "/v1/followers", json={"follower": bob.username}, headers=alice.bearer)
        assert response.status_code in (404, 405), (method, response.status_code, response.text[:300])
        assert_error(response, response.status_code)
    assert alice.username not in following(api, bob)
