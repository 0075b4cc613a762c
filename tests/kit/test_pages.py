"""Keyset page tokens and the `limit` parameter shared by every listing."""
from __future__ import annotations

import pytest
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.kit.core.pages import decode_page_token, encode_page_token, validate_limit


def invalid_field(call, *args, **kwargs) -> str:
    with pytest.raises(InvalidInput) as raised:
        call(*args, **kwargs)
    return raised.value.field


def test_round_trip_and_first_page():
    assert decode_page_token(encode_page_token(42, ["following", "ann"]), ["following", "ann"]) == 42
    assert decode_page_token(None, "anything") is None and decode_page_token("", "anything") is None


@pytest.mark.parametrize("token", ["garbage", "e30", "eyJhIjotMX0", "eyJhIjp0cnVlfQ", "!!!"])
def test_invalid_tokens_name_the_parameter(token):
    assert invalid_field(decode_page_token, token, "listing") == "start_token"


def test_a_token_is_refused_by_another_listing():
    token = encode_page_token(5, ["following", "ann"])
    assert invalid_field(decode_page_token, token, ["followers", "ann"]) == "start_token"
    assert invalid_field(decode_page_token, token, ["following", "bob"]) == "start_token"


@pytest.mark.parametrize("raw,expected", [(None, 10), ("", 10), ("1", 1), ("50", 50), (7, 7)])
def test_limits(raw, expected):
    assert validate_limit(raw, default=10, maximum=50) == expected


@pytest.mark.parametrize("raw", ["0", "51", "-1", "ten", "1.5"])
def test_bad_limits_name_the_parameter(raw):
    assert invalid_field(validate_limit, raw, default=10, maximum=50) == "limit"
