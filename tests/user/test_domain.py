"""User domain rules without infrastructure."""
from __future__ import annotations

import itertools

import pytest
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.kit.core.validation import validate_username
from delinkcious.user.domain import (
    InvalidToken,
    LoginIdentity,
    new_token_secret,
    token_hash,
    username_base,
    username_candidates,
    validate_token_secret,
)


@pytest.mark.parametrize("login,subject,expected", [
    ("Octo-Cat", "1", "octo-cat"),
    ("Jane.Doe_99", "s", "jane-doe-99"),
    ("--weird--", "s", "weird"),
    (None, "auth0|ABC", "auth0-abc"),
    ("日本", "x", "user"),
    ("a" * 60, "s", "a" * 39),
    ("a" * 38 + "-b", "s", "a" * 38),
])
def test_username_base_follows_github_rules(login, subject, expected):
    base = username_base(login, subject)
    assert base == expected and validate_username(base) == base


def test_candidates_are_valid_and_distinct():
    candidates = list(itertools.islice(username_candidates("a" * 39), 120))
    assert candidates[:3] == ["a" * 39, "a" * 37 + "-2", "a" * 37 + "-3"]
    assert len(set(candidates)) == 120
    assert all(validate_username(candidate) for candidate in candidates)


def test_login_identity_parsing():
    identity = LoginIdentity.parse({"provider": "github", "subject": 583231, "login": "octocat",
                                    "email": " octo@example.com ", "name": "The Octocat"})
    assert (identity.subject, identity.email) == ("583231", "octo@example.com")


@pytest.mark.parametrize("payload,field", [
    ({"subject": "1"}, "provider"),
    ({"provider": "Git Hub", "subject": "1"}, "provider"),
    ({"provider": "github"}, "subject"),
    ({"provider": "github", "subject": " "}, "subject"),
    ({"provider": "github", "subject": "x" * 256}, "subject"),
    ({"provider": "github", "subject": "1", "email": "not-an-email"}, "email"),
    ({"provider": "github", "subject": "1", "name": "n" * 201}, "name"),
    ({"provider": "github", "subject": "1", "login": 5}, "login"),
    ({"provider": "github", "subject": "1", "admin": True}, "admin"),
])
def test_invalid_identities(payload, field):
    with pytest.raises(InvalidInput) as raised:
        LoginIdentity.parse(payload)
    assert raised.value.field == field


def test_tokens_are_long_random_and_stored_only_as_hashes():
    first, second = new_token_secret(), new_token_secret()
    assert first != second and first.startswith("dlk_") and len(first) >= 40
    assert len(token_hash(first)) == 32 and token_hash(first) != token_hash(second)
    assert validate_token_secret(first) == first
    for bad in (None, 5, "not-a-token", "dlk_" + "x" * 300):
        with pytest.raises(InvalidToken):
            validate_token_secret(bad)
