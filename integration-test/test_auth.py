"""Logging in (through the local identity provider), presenting tokens, logging out."""

from __future__ import annotations

import pytest
from delinkcious_client import (
    GatewaySession,
    Settings,
    User,
    Users,
    assert_error,
    assert_ok,
    eventually,
    login,
    new_session,
)


@pytest.mark.needs_login
def test_two_people_log_in_and_each_gets_their_own_token(settings: Settings, users: Users) -> None:
    names = [users.unique_name("alice"), users.unique_name("bob")]
    answers = []
    for name in names:
        with new_session(settings) as session:
            answers.append(login(session, name))
    assert [answer["username"] for answer in answers] == names
    assert answers[0]["access_token"] != answers[1]["access_token"]
    for answer in answers:
        assert isinstance(answer["access_token"], str) and len(answer["access_token"]) >= 20
        assert answer["email"] is None or "@" in answer["email"], answer
        assert answer["name"] is None or isinstance(answer["name"], str), answer

    # The same identity logging in again is the same user, with another token; both work.
    with new_session(settings) as session:
        again = login(session, names[0])
    assert again["username"] == names[0]
    assert again["access_token"] != answers[0]["access_token"]
    with new_session(settings) as api:
        for token in (answers[0]["access_token"], again["access_token"]):
            me = assert_ok(api.get("/v1/me", headers={"Authorization": f"Bearer {token}"}))
            assert me["username"] == names[0]


def test_me_accepts_a_bearer_token_and_the_access_token_header(api: GatewaySession, alice: User, bob: User) -> None:
    for user in (alice, bob):
        for headers in (user.bearer, user.access_token, {"Authorization": f"bearer {user.token}"}):
            me = assert_ok(api.get("/v1/me", headers=headers))
            assert me["username"] == user.username, (headers.keys(), me)
            assert "token" not in me and "access_token" not in me


def test_an_invalid_token_is_refused(api: GatewaySession) -> None:
    assert_error(api.get("/v1/me", headers={"Authorization": "Bearer dlk_not-a-real-token"}), 401)
    assert_error(api.get("/v1/me", headers={"Access-Token": "dlk_not-a-real-token"}), 401)
    assert_error(api.get("/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401)


@pytest.mark.needs_login
def test_a_login_with_a_forged_state_is_refused(settings: Settings) -> None:
    with new_session(settings) as session:
        response = session.get("/login/authorized", params={"code": "forged", "state": "forged"})
    assert response.status_code in (400, 401), response.text[:500]
    assert_error(response, response.status_code)


@pytest.mark.needs_login
def test_after_logout_the_token_is_dead(api: GatewaySession, settings: Settings, alice: User) -> None:
    assert_ok(api.get("/v1/me", headers=alice.bearer))
    assert_ok(api.post("/logout", headers=alice.bearer), 200, 204)

    def refused() -> bool:
        return api.get("/v1/me", headers=alice.bearer).status_code == 401

    eventually(refused, settings.wait_timeout, "the revoked token to be refused")
    assert_error(api.get("/v1/me", headers=alice.access_token), 401)
    assert_error(api.get("/v1/links", headers=alice.bearer), 401)


def test_logout_needs_a_token(api: GatewaySession) -> None:
    assert_error(api.post("/logout"), 401)
