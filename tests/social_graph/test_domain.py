"""The social-graph domain's rules, without any infrastructure."""
from __future__ import annotations

import pytest
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.social_graph.domain import CannotFollowSelf, FollowRequest, check_can_follow


def invalid_field(call, *args, **kwargs) -> str:
    with pytest.raises(InvalidInput) as raised:
        call(*args, **kwargs)
    return raised.value.field


@pytest.mark.parametrize("name", ["a", "octo-cat", "a" * 39, "x1", "1-2-3"])
def test_followed_is_a_username(name):
    assert FollowRequest.parse({"followed": name}).followed == name


@pytest.mark.parametrize("name", ["", "A", "Bob", "a" * 40, "-a", "a-", "a--b", "a_b", "a.b", "a b", 42, ["bob"]])
def test_a_malformed_followed_names_the_field(name):
    assert invalid_field(FollowRequest.parse, {"followed": name}) == "followed"


def test_follow_request():
    assert FollowRequest.parse({"followed": "bob"}) == FollowRequest(followed="bob")


@pytest.mark.parametrize("payload,field", [
    ({}, "followed"),
    ({"followed": None}, "followed"),
    ({"followed": "bob", "follower": "eve"}, "follower"),
])
def test_invalid_follow_requests_name_the_field(payload, field):
    assert invalid_field(FollowRequest.parse, payload) == field


def test_following_yourself_is_refused():
    check_can_follow("ann", "bob")
    with pytest.raises(CannotFollowSelf) as raised:
        check_can_follow("ann", "ann")
    error = raised.value
    assert (error.status, error.code, error.field) == (400, "cannot_follow_self", "followed")
    assert error.to_body() == {"message": "followed: a user cannot follow themselves",
                               "code": "cannot_follow_self", "field": "followed"}
