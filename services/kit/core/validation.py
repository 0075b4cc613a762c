"""Input rules shared by every service's contract: usernames and strict JSON objects."""
from __future__ import annotations

import re
from typing import Any

from .errors import InvalidInput

# GitHub login rules: 1-39 characters of a-z, 0-9 and single inner dashes (lower-cased by us).
USERNAME_MAX_LENGTH = 39
_USERNAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){0,38}$")


def validate_username(username: Any, field_name: str = "username") -> str:
    if not isinstance(username, str) or not _USERNAME.match(username):
        raise InvalidInput(field_name, "must be 1-39 characters of a-z, 0-9 and single inner dashes")
    return username


def reject_unknown_fields(payload: dict[str, Any], known: set[str]) -> None:
    """Unknown fields are refused: a typo ("tag" for "tags") must not be silently ignored."""
    unknown = sorted(set(payload) - known)
    if unknown:
        raise InvalidInput(unknown[0], f"unknown field (expected one of: {', '.join(sorted(known))})")
